"""Post-training quantization (whitepaper section 3.1): quantize a trained full-precision run without
retraining, and report its accuracy in float, with quantized weights, and with quantized weights and
activations -- in a run directory of its own, with the same files as a training run."""
from __future__ import annotations

import copy
import json
import logging
import time
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf

import qbench
from qbench.build import build_model, resolve_device
from qbench.checkpoint import load_checkpoint, save_checkpoint, write_json
from qbench.config import check_data, compose, load_run_config
from qbench.data import build_data
from qbench.data.loader import calibration_batches
from qbench.errors import UserError
from qbench.losses import LOSSES
from qbench.methods import build_method
from qbench.methods.policy import apply_layer_policy
from qbench.nn import FakeQuant
from qbench.provenance import device_name, git_commit, now
from qbench.report import MetricsLog, layer_table, log_to
from qbench.train import evaluate

log = logging.getLogger("qbench")


def _source(run: Path):
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a qbench run directory (no config.yaml)")
    status = json.loads((run / "summary.json").read_text()).get("status") if (run / "summary.json").is_file() else None
    if status != "completed" or not (run / "checkpoints" / "last.pt").is_file():
        raise UserError(f"ptq needs a finished run with a checkpoint; {run} has status {status or 'unknown'}")
    cfg = load_run_config(run)
    if _quantizes(cfg):
        raise UserError(f"ptq quantizes a full-precision model; {run} was trained with method "
                        f"{cfg.method.name!r} (train it with method=fp)")
    return cfg


def _quantizes(cfg) -> bool:
    m = build_method(cfg.method)
    return any(q is not None for q in (m.weight_quantizer, m.input_quantizer, m.output_quantizer))


def ptq_settings(overrides: list[str]):
    bad = [o for o in overrides if not o.startswith("method.")]
    if bad:
        raise UserError(f"qbench ptq takes run=<run dir> and method.* settings; got {' '.join(bad)} "
                        f"(valid: {', '.join(sorted(k for k in compose(['method=ptq']).method if k != 'name'))})")
    try:
        cfg = compose(["method=ptq", *overrides])
    except Exception as e:
        raise UserError(str(e).strip().splitlines()[0]) from None
    calib = cfg.method.calib_batches
    if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
        raise UserError(f"method.calib_batches={calib!r} is invalid; allowed: an integer >= 1")
    return cfg.method, build_method(cfg.method)


def run_ptq(source: Path, overrides: list[str], runs_root: Path = Path("runs")) -> Path:
    source = source.resolve()
    cfg = _source(source)
    settings, method = ptq_settings(overrides)
    check_data(cfg)
    device = resolve_device(cfg.trainer.device)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, device, int(cfg.seed))
    fp_model = build_model(cfg, build_method(cfg.method))
    state = load_checkpoint(source / "checkpoints" / "last.pt")
    try:
        fp_model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"checkpoint of {source} does not match its config ({str(e).splitlines()[0]})") from None
    fp_model.to(device)

    started = datetime.now()
    run_dir = runs_root.resolve() / started.strftime("%Y-%m-%d") / (
        f"{started.strftime('%H-%M-%S-%f')}_ptq-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}")
    run_dir.mkdir(parents=True)
    out_cfg = copy.deepcopy(cfg)
    OmegaConf.update(out_cfg, "method", settings, merge=False)
    OmegaConf.update(out_cfg, "ptq_source", str(source), force_add=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(out_cfg, resolve=True))
    log_to(run_dir)
    t0, commit = time.time(), git_commit()
    loss_fn = LOSSES[cfg.trainer.loss]
    # the test split, also for a source trained with a held-out validation set (data.holdout): PTQ selects nothing
    target = data.test if data.test is not None else data.val
    results = {"fp": evaluate(fp_model, target, loss_fn)}

    w_model = copy.deepcopy(fp_model)
    apply_layer_policy(w_model, method.weight_quantizer, None, method.keep_first_fp, method.keep_last_fp)
    results["weights"] = evaluate(w_model, target, loss_fn)

    wa_model = copy.deepcopy(fp_model)
    rows = apply_layer_policy(wa_model, method.weight_quantizer, method.input_quantizer, method.keep_first_fp,
                              method.keep_last_fp)
    layer_table(rows, log)
    _calibrate(wa_model, data.train, int(settings.calib_batches))
    results["weights+activations"] = evaluate(wa_model, target, loss_fn)

    metrics = MetricsLog(run_dir, [])
    for i, (stage, (loss, acc, top5)) in enumerate(results.items(), start=1):
        metrics.write({"epoch": i, "stage": stage, "val_loss": loss, "val_acc": acc, "val_top5": top5})
        log.info(f"{stage:>20}: val_acc {100 * acc:.2f}%  val_loss {loss:.4f}")
    metrics.close()
    save_checkpoint(run_dir / "checkpoints" / "last.pt", {"model": wa_model.state_dict(), "source": str(source)})
    write_json(run_dir / "summary.json", {
        "status": "completed", "method": "ptq", "model": cfg.model.name, "dataset": cfg.dataset.name,
        "seed": int(cfg.seed), "w_bits": settings.w_bits, "a_bits": settings.a_bits,
        "per_channel": settings.per_channel, "symmetric": settings.symmetric,
        "fp_val_acc": results["fp"][1], "weight_only_val_acc": results["weights"][1],
        "final_val_acc": results["weights+activations"][1], "best_val_acc": results["weights+activations"][1],
        "final_val_top5": results["weights+activations"][2],
        "epochs": 0, "epochs_completed": 0, "wall_seconds": round(time.time() - t0, 3),
        "device": device_name(device), "qbench_version": qbench.__version__, "qbench_commit": commit,
        "paper": settings.paper, "source_run": str(source), "finished_at": now(), "run_dir": str(run_dir)})
    return run_dir


@torch.no_grad()
def _calibrate(model: torch.nn.Module, batches, n: int) -> None:
    """Observe activation ranges on ``n`` training batches, un-augmented, in float, with BN in eval mode."""
    model.eval()
    quantizers = [m for m in model.modules() if isinstance(m, FakeQuant)]
    for q in quantizers:
        q.train()
        q.enabled = False
    for x in calibration_batches(batches, n):
        model(x)
    for q in quantizers:
        q.eval()
        q.enabled = True
