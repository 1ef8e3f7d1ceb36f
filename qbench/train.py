"""The one training loop. It knows models, data, optimizers and callbacks -- never which method is running.

    method, model = build(cfg)                              # qbench.build: the layer policy quantizes the model
    optimizer = optimizer_for(cfg.optim, model, callbacks)  # in the parameter groups the callbacks ask for
    for epoch:
        for x, y in train batches: loss(model(x), y).backward(); optimizer.step(); callbacks
        evaluate; log; checkpoint (atomically, every trainer.checkpoint_every epochs and after the last)
"""
from __future__ import annotations

import json
import logging
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import qbench
from qbench import distributed
from qbench.build import build, resolve_device
from qbench.checkpoint import load_checkpoint, save_checkpoint, write_json
from qbench.config import compile_options
from qbench.data import build_data
from qbench.errors import UserError
from qbench.losses import LOSSES
from qbench.optim import build_scheduler, optimizer_for
from qbench.provenance import device_name, git_commit, now
from qbench.report import MetricsLog, layer_table, progress_bar
from qbench.results.runs import init_record

log = logging.getLogger("qbench")


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path | None, resume: bool = False, overrides: list[str] = (),
                 data=None):
        """``overrides``: the execution settings a resumed process changed (``qbench train resume=<dir>
        trainer.compile=true``), recorded in its segment. ``data``: batches to train on instead of the dataset's
        (``qbench bench`` times the training step on random images); ``run_dir`` is written only by ``fit``."""
        self.cfg, self.run_dir, self.overrides = cfg, Path(run_dir) if run_dir is not None else None, list(overrides)
        self.commit = git_commit()
        # the run this one starts from (method.init), as summary.json records it; a resumed run keeps its record
        previous = self.run_dir / "summary.json" if resume else None
        self.previous = json.loads(previous.read_text()) if previous is not None and previous.is_file() else {}
        self.init = self.previous.get("init") or (init_record(cfg.method.init) if cfg.method.get("init") else None)
        self.earlier_segments: list[dict] = []  # the processes a resumed run ran in before this one
        self.device = distributed.setup(resolve_device(cfg.trainer.device))
        self.main = distributed.is_main()  # only rank 0 of a torchrun job writes
        self.epochs = int(cfg.trainer.epochs)
        torch.manual_seed(cfg.seed)  # model init, dropout and stochastic quantizers draw from this stream

        # the data draws from its own generator, so building it first leaves the global stream to the method's
        # quantizer probes and the model's initialization, in that order (as every run so far drew it)
        self.data = data if data is not None else build_data(cfg, self.device, int(cfg.seed))
        built = build(cfg)
        self.method, self.model, self.layers = built.method, built.model, built.layers
        cl = cfg.trainer.get("channels_last", "auto")
        self.channels_last = self.device.type == "cuda" if cl == "auto" else bool(cl)
        self.model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self.step_model = distributed.wrap(self.model, self.device)  # callbacks and checkpoints see self.model
        self.eager_step_model, self.compile_pending = self.step_model, bool(cfg.trainer.get("compile", False))
        self.eval_model = self.model
        if self.compile_pending:
            # evaluation is compiled too: each batch re-quantizes every weight, which eager runs pass by pass.
            # Its graphs (no_grad, eval mode) sit beside the training graphs of each stage (SQ, INQ, bottom_up's
            # one per layer), so torch's limit of 8 per function grows to two per stage plus its own 8
            variants = max((cb.graph_variants() for cb in self.method.callbacks), default=1)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16, 2 * variants + 8)
            if self.device.type == "cpu":
                import torch._inductor.config as inductor_config

                # inductor's own CPU random numbers (Philox, element by element) cost twice eager's generator:
                # BinaryConnect stoch's 2.9M draws a batch, 57 vs 27 ms. Falling back to eager's generator is
                # faster and draws the very numbers an eager run with the same seed draws
                inductor_config.fallback_random = True
            self.eval_model = torch.compile(self.model, **compile_options(cfg.trainer))
            self.step_model = (self.eval_model if self.step_model is self.model
                               else torch.compile(self.step_model, **compile_options(cfg.trainer)))
        self.callbacks = self.method.callbacks

        self.optimizer = optimizer_for(cfg.optim, self.model, self.callbacks)
        # staged methods (SQ, INQ) run one learning-rate schedule per stage
        starts = {0, *(e for cb in self.callbacks for e in (cb.lr_restarts() or []))}
        self.schedule_starts = sorted(e for e in starts if 0 <= e < self.epochs)
        self.scheduler = build_scheduler(self._schedule_config(0), self.optimizer)
        self.loss_fn = LOSSES[cfg.trainer.loss]
        amp = cfg.trainer.amp and self.device.type == "cuda"
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext())

        self.start_epoch, self.history, self.wall_before, self.resume = 0, [], 0.0, resume
        if resume:
            self._restore(load_checkpoint(self.run_dir / "checkpoints" / "last.pt"))
        self.metrics = None  # opened by fit: building a trainer writes nothing

    # --- state -----------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        rng = {"torch": torch.get_rng_state(), "data": self.data.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "callbacks": [cb.state_dict() for cb in self.callbacks],
                "rng": rng, "history": self.history, "wall_seconds": self.wall_before + self._elapsed(),
                "segments": self.earlier_segments + [self._segment(epoch)]}

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            for cb, s in zip(self.callbacks, state["callbacks"]):
                cb.load_state_dict(s)
            torch.set_rng_state(state["rng"]["torch"])
            self.data.generator.set_state(state["rng"]["data"])
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"checkpoint in {self.run_dir} does not match this run's config "
                            f"({str(e).splitlines()[0]})") from None
        self.start_epoch, self.history = int(state["epoch"]), list(state["history"])
        self.wall_before = float(state["wall_seconds"])
        # a checkpoint written before segments were recorded: its process is the one the last summary names
        p = self.previous
        self.earlier_segments = list(state.get("segments") or [{
            "from_epoch": 0, "to_epoch": self.start_epoch, "qbench_commit": p.get("qbench_commit"),
            "device": p.get("device"), "processes": p.get("processes", 1), "started_at": p.get("started_at"),
            "wall_seconds": round(self.wall_before, 3)}])

    def _segment(self, to_epoch: int) -> dict:
        """This process's share of the run: its epochs, commit, device and wall time. A run resumed on other
        hardware or from another commit lists one segment per process (``summary.json``'s ``segments``)."""
        return {"from_epoch": self.start_epoch, "to_epoch": to_epoch, "qbench_commit": self.commit,
                "device": device_name(self.device), "processes": distributed.world_size(),
                "started_at": self._started, "wall_seconds": round(self._elapsed(), 3),
                **({"overrides": self.overrides} if self.overrides else {})}

    def _elapsed(self) -> float:
        return time.time() - self._t0

    def _schedule_config(self, start: int) -> DictConfig:
        """The sched config of the schedule that starts at epoch ``start``, resolved for its own length."""
        end = min([e for e in self.schedule_starts if e > start] + [self.epochs])
        if start == 0 and end == self.epochs:
            return self.cfg.sched
        return OmegaConf.merge(self.cfg, {"trainer": {"epochs": end - start}}).sched

    def restart_schedule(self, epoch: int) -> None:
        """A new stage: the optimizer forgets its state (momentum, Adam moments) and the learning-rate
        schedule starts again from optim.lr, as a new solver started from the previous stage's weights."""
        self.optimizer.state.clear()
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        self.scheduler = build_scheduler(self._schedule_config(epoch), self.optimizer)

    def _rng_state(self) -> tuple:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def _set_rng_state(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    # --- loop ------------------------------------------------------------------------------------
    def hook(self, name: str, *args) -> dict:
        scalars = {}
        for cb in self.callbacks:
            scalars.update(getattr(cb, name)(self, *args) or {})
        return scalars

    def begin_epoch(self, epoch: int) -> None:
        """A stage's schedule restart where one begins, then the callbacks' epoch set-up (a staged method's
        selection of what it quantizes this epoch)."""
        if epoch > 0 and epoch in self.schedule_starts:
            self.restart_schedule(epoch)
        self.hook("on_epoch_start", epoch)

    def train_epoch(self, bar) -> tuple[float, float]:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for step, (x, y) in enumerate(self.data.train):
            x, y = distributed.shard(x, y)
            loss, out = self.train_step(step, x, y)
            # accumulated on the device and read once per epoch: no host-device sync inside the step
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            bar.advance(len(y), loss_sum, seen)
        distributed.sync_buffers(self.model)
        count = torch.tensor(float(seen), device=self.device)
        loss_sum, correct, count = distributed.sum_over_ranks(loss_sum, correct, count)
        return loss_sum.item() / count.item(), correct.item() / count.item()

    def train_step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step with every per-batch hook around it: (loss, output). ``qbench bench`` times this."""
        self.hook("on_train_batch_start", step)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, out = self._first_compiled_step(x, y) if self.compile_pending else self._step(x, y)
        self.hook("on_after_optimizer_step")
        return loss, out

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast:
            out = self.step_model(x)
        loss = self.loss_fn(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.hook("on_before_optimizer_step")
        self.optimizer.step()
        return loss, out

    def _first_compiled_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torch.compile compiles on its first call: if that fails (no compiler, an unsupported op), the
        model's state and the random streams are put back and the run goes on in eager mode."""
        self.compile_pending = False
        weights, rng = {k: v.clone() for k, v in self.model.state_dict().items()}, self._rng_state()
        try:
            return self._step(x, y)
        except Exception as e:  # noqa: BLE001 -- any compiler failure means: run eagerly
            log.warning("torch.compile failed (%s); training in eager mode", str(e).strip().splitlines()[0][:200])
            self.model.load_state_dict(weights)
            self._set_rng_state(rng)
            self.optimizer.zero_grad(set_to_none=True)
            self.step_model, self.eval_model = self.eager_step_model, self.model
            return self._step(x, y)

    def evaluate(self) -> tuple[float, float, float]:
        return self._evaluate(self.data.val)

    def evaluate_test(self) -> tuple[float, float, float]:
        """The test split, when the validation set is held out of the training split (``data.holdout``)."""
        return self._evaluate(self.data.test)

    def _evaluate(self, batches) -> tuple[float, float, float]:
        """Through the compiled model when there is one; if compiling the evaluation fails, evaluation (this
        one and the rest) goes on in eager mode with the random stream as it was."""
        if self.eval_model is self.model:
            return evaluate(self.model, batches, self.loss_fn, self.autocast)
        rng = self._rng_state()
        try:
            return evaluate(self.eval_model, batches, self.loss_fn, self.autocast)
        except Exception as e:  # noqa: BLE001 -- any compiler failure means: evaluate eagerly
            log.warning("torch.compile failed (%s); evaluating in eager mode",
                        str(e).strip().splitlines()[0][:200])
            self._set_rng_state(rng)
            self.eval_model = self.model
            return evaluate(self.model, batches, self.loss_fn, self.autocast)

    def fit(self) -> dict:
        self._t0, self._started = time.time(), now()
        if self.main:
            self.metrics = MetricsLog(self.run_dir, self.history, purge_after=self.start_epoch if self.resume else None)
        summary = self._summary("running")
        self._write_summary(summary)
        if self.main:
            layer_table(self.layers, log)
        self.hook("on_train_start")
        previous_handler = _sigterm_as_interrupt()
        try:
            with progress_bar(bool(self.cfg.trainer.progress) and self.main) as bar:
                for epoch in range(self.start_epoch, self.epochs):
                    t = time.time()
                    self.begin_epoch(epoch)
                    lr = self.optimizer.param_groups[-1]["lr"]
                    bar.start_epoch(epoch + 1, self.epochs, len(self.data.train))
                    train_loss, train_acc = self.train_epoch(bar)
                    self.hook("on_train_epoch_end", epoch)
                    evaluate = (epoch + 1) % int(self.cfg.trainer.eval_every) == 0 or epoch + 1 == self.epochs
                    val_loss, val_acc, val_top5 = self.evaluate() if evaluate else (None, None, None)
                    test = self.evaluate_test() if evaluate and self.data.test is not None else None
                    self.scheduler.step()
                    extra = self.hook("on_epoch_end", epoch)
                    if not math.isfinite(train_loss):
                        raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch + 1}")
                    record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                              "val_loss": val_loss, "val_acc": val_acc, "val_top5": val_top5, "lr": lr,
                              **({"test_loss": test[0], "test_acc": test[1], "test_top5": test[2]} if test else {}),
                              "seconds": time.time() - t, **extra}
                    self.history.append(record)
                    every = int(self.cfg.trainer.checkpoint_every)
                    if self.main:
                        if (epoch + 1) % every == 0 or epoch + 1 == self.epochs:
                            save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self._state(epoch + 1))
                            # kept current with the checkpoint: a run killed later says how far it got
                            self._write_summary(self._summary("running"))
                        self.metrics.write(record)
                        log.info(_epoch_line(record, self.epochs))
            summary = self._summary("completed")
            if self.main:
                self.metrics.hparams(self._hparams(), {k: summary[k] for k in (
                    "final_val_acc", "best_val_acc", "test_acc_at_best_val") if k in summary})
        except KeyboardInterrupt:
            summary = self._summary("interrupted")
            raise
        except BaseException:
            summary = self._summary("failed")
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            summary["finished_at"] = now()
            self._write_summary(summary)
            if self.main:
                self.metrics.close()
        return summary

    def _write_summary(self, summary: dict) -> None:
        if self.main:
            write_json(self.run_dir / "summary.json", summary)

    def _hparams(self) -> dict:
        """method, model, dataset, seed and the run's own command-line overrides (Hydra's overrides.yaml)."""
        c = self.cfg
        hp = {"method": c.method.name, "model": c.model.name, "dataset": c.dataset.name, "seed": int(c.seed)}
        overrides = self.run_dir / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            for o in OmegaConf.load(overrides):
                key, _, value = str(o).partition("=")
                if not key.lstrip("+~").startswith("hydra"):
                    hp[key.lstrip("+~")] = value
        return hp

    def _summary(self, status: str) -> dict:
        accs = [r["val_acc"] for r in self.history if r["val_acc"] is not None]
        c = self.cfg
        return {
            "status": status, "method": c.method.name, "model": c.model.name, "dataset": c.dataset.name,
            "seed": int(c.seed), "epochs": self.epochs, "epochs_completed": len(self.history),
            "final_val_acc": accs[-1] if accs else None, "best_val_acc": max(accs) if accs else None,
            "final_val_top5": next((r.get("val_top5") for r in reversed(self.history) if r["val_acc"] is not None),
                                   None),
            "wall_seconds": round(self.wall_before + self._elapsed(), 3), "device": device_name(self.device),
            "processes": distributed.world_size(),
            "qbench_version": qbench.__version__, "qbench_commit": self.commit, "paper": c.method.get("paper"),
            # a resumed run keeps its first start (each process's own is in its segment) and its absolute folder
            "started_at": self.previous.get("started_at") or self._started,
            "run_dir": str(self.run_dir.resolve()),
            **({"init": self.init} if self.init else {}),
            **(selected_test(self.history) if self.data.test is not None else {}),
            **({"segments": self.earlier_segments + [self._segment(len(self.history))]}
               if self.earlier_segments else {}),
        }


def selected_test(history: list[dict]) -> dict:
    """With a held-out validation set (``data.holdout``): the test accuracy at the epoch of best validation
    accuracy, the latest such epoch on a tie (BinaryConnect's code keeps the test error of the last epoch whose
    validation error is <= the best so far; its paper and BNN's report that number), and at the last epoch."""
    evaluated = [r for r in history if r.get("test_acc") is not None]
    if not evaluated:
        return {"best_val_epoch": None, "test_acc_at_best_val": None, "test_top5_at_best_val": None,
                "final_test_acc": None, "final_test_top5": None}
    best = max(reversed(evaluated), key=lambda r: r["val_acc"])  # max keeps the first of ties: the latest epoch
    return {"best_val_epoch": best["epoch"], "test_acc_at_best_val": best["test_acc"],
            "test_top5_at_best_val": best["test_top5"], "final_test_acc": evaluated[-1]["test_acc"],
            "final_test_top5": evaluated[-1]["test_top5"]}


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, loss_fn, autocast=None) -> tuple[float, float, float]:
    """(mean loss, top-1 accuracy, top-5 accuracy) over ``batches`` in eval mode (top-5: the label among the
    five highest scores; with fewer than five classes, among all of them)."""
    model.eval()
    loss_sum, correct, correct5, seen = 0.0, 0, 0, 0
    for x, y in batches:
        with autocast or nullcontext():
            out = model(x).float()
        loss_sum += loss_fn(out, y) * len(y)
        correct += (out.argmax(1) == y).sum()
        correct5 += (out.topk(min(5, out.shape[1]), dim=1).indices == y[:, None]).any(1).sum()
        seen += len(y)
    return float(loss_sum) / seen, int(correct) / seen, int(correct5) / seen


def _epoch_line(r: dict, epochs: int) -> str:
    val = f"val_loss {r['val_loss']:.4f} val_acc {100 * r['val_acc']:.2f}%" if r["val_acc"] is not None else "no eval"
    if r.get("test_acc") is not None:
        val += f" test_acc {100 * r['test_acc']:.2f}%"
    return (f"epoch {r['epoch']}/{epochs}  train_loss {r['train_loss']:.4f} train_acc {100 * r['train_acc']:.2f}%  "
            f"{val}  lr {r['lr']:.3g}  {r['seconds']:.1f}s")


def _sigterm_as_interrupt():
    """SLURM and `kill` send SIGTERM: end the run as 'interrupted' (last checkpoint kept) like Ctrl-C."""
    def handler(signum, frame):
        from qbench.errors import Terminated

        raise Terminated
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a launcher's worker thread)
        return None
