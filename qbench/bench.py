"""qbench bench: training throughput of methods x models x batch sizes, each as a ratio to the same model in
full precision measured in the same run, and optionally to a plain PyTorch reference loop (DataLoader +
torchvision PIL transforms, eager fp32, binarization as an autograd.Function: the BinaryNet.pytorch way).
The reference binarizes with plain sign and its STE wherever the method quantizes, so it is the like-for-like
baseline for sign-based methods (binaryconnect det, bnn); for scaled or multi-bit methods it is cheaper
than the method itself.

Speed targets live here as printed ratios, never in unit tests. Data is random uint8 images of the dataset's
shape (CIFAR-10 unless ``dataset=`` says otherwise; throughput does not depend on pixel values) with the
dataset's crop and flip; the qbench path serves them as the trainer does, from device memory. The fp baseline
takes every override but the ``method.*`` ones, which are the measured method's own settings.
"""
from __future__ import annotations

import argparse
import json
import queue
import time
from pathlib import Path

import torch

from qbench.build import build_model, resolve_device
from qbench.config import compose
from qbench.data.loader import TensorLoader
from qbench.errors import UserError
from qbench.losses import LOSSES
from qbench.methods import build_method
from qbench.methods.policy import apply_layer_policy
from qbench.optim import build_optimizer



class _RefSign(torch.autograd.Function):
    """The reference codes' binarization: sign forward, saturated straight-through backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


def _ref_sign(x):
    return _RefSign.apply(x)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _own(method: str, overrides: list[str]) -> list[str]:
    """The overrides a method is measured with: the fp baseline leaves out the method's own settings."""
    return [o for o in overrides if method != "fp" or not o.lstrip("+~").startswith("method.")]


def _config(method: str, model: str, overrides: list[str], device, batch: int):
    return compose([f"method={method}", f"model={model}", "dataset=cifar10", *_own(method, overrides),
                    f"trainer.device={device}", f"trainer.batch_size={batch}"])


def _reference_model(cfg):
    """The same layers, binarized the reference way (only for sign-based methods), no callbacks."""
    m = build_method(cfg.method)
    net = build_model(cfg, m)
    quantized = m.weight_quantizer is not None
    apply_layer_policy(net, _ref_sign if quantized else None, _ref_sign if m.input_quantizer is not None else None,
                       m.keep_first_fp, m.keep_last_fp)
    return net


def _qbench_batches(n: int, batch: int, device, gen, ds):
    images = torch.randint(0, 256, (n, ds.in_channels, ds.image_size, ds.image_size), dtype=torch.uint8,
                           generator=gen).to(device)
    labels = torch.randint(0, ds.num_classes, (n,), generator=gen).to(device)
    return TensorLoader(images, labels, batch, ds.mean, ds.std, train=True, crop_padding=ds.augment.crop_padding,
                        hflip=bool(ds.augment.hflip), generator=torch.Generator(device=device).manual_seed(0))


def _reference_batches(n: int, batch: int, workers: int, gen, ds):
    from torchvision import transforms as T

    size, pad = ds.image_size, ds.augment.crop_padding

    class Images(torch.utils.data.Dataset):
        def __init__(self):
            shape = (n, size, size) + ((ds.in_channels,) if ds.in_channels > 1 else ())
            self.x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen).numpy()
            self.y = torch.randint(0, ds.num_classes, (n,), generator=gen).tolist()
            self.tf = T.Compose([T.RandomCrop(size, padding=pad)] * bool(pad)
                                + [T.RandomHorizontalFlip()] * bool(ds.augment.hflip)
                                + [T.ToTensor(), T.Normalize(list(ds.mean), list(ds.std))])

        def __len__(self):
            return n

        def __getitem__(self, i):
            from PIL import Image
            return self.tf(Image.fromarray(self.x[i])), self.y[i]

    return torch.utils.data.DataLoader(Images(), batch_size=batch, shuffle=True, num_workers=workers,
                                       drop_last=True)


def measure(method: str, model: str, batch: int, steps: int, warmup: int, device, overrides: list[str],
            reference: bool = False, workers: int = 0, start=None) -> dict:
    """Images/s of ``steps`` timed training steps after ``warmup`` untimed ones. qbench's path is the
    Trainer's own ``train_step`` with every callback hook (a staged method's per-batch re-draw included), after
    the hooks that start training and its first epoch; the reference path is the plain loop. ``start``: a
    barrier every packed process waits at before its first timed step, so that their timed steps overlap."""
    from qbench.data.loader import Data
    from qbench.train import Trainer

    torch.manual_seed(0)
    cfg = _config(method, model, overrides, device, batch)
    gen = torch.Generator().manual_seed(0)
    n = batch * (steps + warmup)
    ds = cfg.dataset
    if reference:
        net = _reference_model(cfg).to(device)
        opt = build_optimizer(cfg.optim, [{"params": list(net.parameters())}])
        loss_fn = LOSSES[cfg.trainer.loss]
        batches = _reference_batches(n, batch, workers, gen, ds)

        def train_step(step, x, y):
            loss = loss_fn(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.train()
        amp = compiled = channels_last = False
    else:
        batches = _qbench_batches(n, batch, device, gen, ds)
        trainer = Trainer(cfg, None, data=Data(batches, None, ds.in_channels, ds.num_classes, ds.image_size,
                                               batches.generator))
        trainer.hook("on_train_start")
        trainer.begin_epoch(0)
        trainer.model.train()
        train_step = trainer.train_step
        amp, compiled = isinstance(trainer.autocast, torch.autocast), bool(cfg.trainer.compile)
        channels_last = trainer.channels_last
    data_time = compute_time = 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    it = iter(batches)
    for step in range(steps + warmup):
        if start is not None and step == warmup:
            _sync(device)
            start.wait()
        _sync(device)
        t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _sync(device)
        t1 = time.perf_counter()
        train_step(step, x, y)
        _sync(device)
        t2 = time.perf_counter()
        if step >= warmup:
            data_time += t1 - t0
            compute_time += t2 - t1
    total = data_time + compute_time
    return {"method": method, "model": model, "batch_size": batch, "path": "reference" if reference else "qbench",
            "images_per_s": batch * steps / total, "data_share": data_time / total,
            "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None,
            "input_shape": [ds.in_channels, ds.image_size, ds.image_size],
            "device": str(device), "steps": steps, "amp": amp, "compile": compiled, "channels_last": channels_last}


def run(methods: list[str], models: list[str], batch_sizes: list[int], steps: int, warmup: int, device: str,
        overrides: list[str], reference: bool, workers: int) -> list[dict]:
    from qbench.config import check_overrides

    dev = resolve_device(device)
    if steps < 1 or warmup < 0:
        raise UserError(f"steps={steps} and warmup={warmup}: steps must be >= 1, warmup >= 0")
    others = [m for m in methods if m != "fp"]
    for model in models:  # every combination checked (names, values) before anything is timed, fp included
        if others:
            check_overrides([f"method={','.join(others)}", f"model={model}", "dataset=cifar10", *overrides],
                            data=False)
        check_overrides(["method=fp", f"model={model}", "dataset=cifar10", *_own("fp", overrides)], data=False)
    rows = []
    for model in models:
        for batch in batch_sizes:
            fp = measure("fp", model, batch, steps, warmup, dev, overrides)
            for method in methods:
                r = fp if method == "fp" else measure(method, model, batch, steps, warmup, dev, overrides)
                r = dict(r, ratio_to_fp=r["images_per_s"] / fp["images_per_s"])
                if reference:
                    ref = measure(method, model, batch, steps, warmup, dev, overrides, reference=True, workers=workers)
                    r["reference_images_per_s"] = ref["images_per_s"]
                    r["speedup_over_reference"] = r["images_per_s"] / ref["images_per_s"]
                rows.append(r)
    return rows


def _pack_worker(args: tuple, threads: int, start, results) -> None:
    torch.set_num_threads(threads)
    method, model, batch, steps, warmup, device, overrides = args
    results.put(measure(method, model, batch, steps, warmup, torch.device(device), overrides, start=start))


def packed(method: str, model: str, batch: int, steps: int, warmup: int, device, overrides: list[str],
           n: int) -> dict:
    """``n`` runs of the same training step at once on one device, each in its own process (as
    ``hydra/launcher=parallel hydra.launcher.n_jobs=n`` runs a sweep): their summed images/s over timed
    steps that start together."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(n), ctx.Queue()
    threads = max(1, torch.get_num_threads() // n)
    args = (method, model, batch, steps, warmup, str(device), overrides)
    procs = [ctx.Process(target=_pack_worker, args=(args, threads, start, results)) for _ in range(n)]
    for p in procs:
        p.start()
    rows = []
    while len(rows) < n:
        try:
            rows.append(results.get(timeout=5))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"a packed benchmark process of {method} on {model} failed "
                                   f"(exit codes {[p.exitcode for p in procs]})") from None
    for p in procs:
        p.join()
    return {"method": method, "model": model, "batch_size": batch, "path": f"packed x{n}", "processes": n,
            "images_per_s": sum(r["images_per_s"] for r in rows), "per_process": [r["images_per_s"] for r in rows],
            "device": str(device), "steps": steps}


def run_packing(methods: list[str], models: list[str], batch_sizes: list[int], steps: int, warmup: int,
                device: str, overrides: list[str], n: int) -> list[dict]:
    """For each configuration: one process alone, then ``n`` at once; ratio = total images/s over one's."""
    dev = resolve_device(device)
    rows = []
    for model in models:
        for batch in batch_sizes:
            for method in methods:
                one = packed(method, model, batch, steps, warmup, dev, overrides, 1)
                many = packed(method, model, batch, steps, warmup, dev, overrides, n)
                rows.append(dict(many, single_images_per_s=one["images_per_s"],
                                 packing_ratio=many["images_per_s"] / one["images_per_s"]))
    return rows


def print_packing(rows: list[dict]) -> None:
    from rich.table import Table

    from qbench.report import console
    t = Table(title=f"runs packed on {rows[0]['device']}: total throughput vs one run (measured in this run)",
              title_justify="left")
    for c in ("method", "model", "batch", "processes", "one run images/s", "packed images/s", "ratio"):
        t.add_column(c, justify="left" if c in ("method", "model") else "right")
    for r in rows:
        t.add_row(r["method"], r["model"], str(r["batch_size"]), str(r["processes"]),
                  f"{r['single_images_per_s']:,.0f}", f"{r['images_per_s']:,.0f}", f"{r['packing_ratio']:.2f}x")
    console().print(t)


def print_table(rows: list[dict]) -> None:
    from rich.table import Table

    from qbench.report import console
    t = Table(title=f"training throughput on {rows[0]['device']} (ratios measured in this run)", title_justify="left")
    cols = ["method", "model", "batch", "images/s", "data share", "peak MB", "vs fp", "vs reference"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("method", "model") else "right")
    for r in rows:
        t.add_row(r["method"], r["model"], str(r["batch_size"]), f"{r['images_per_s']:,.0f}", f"{100 * r['data_share']:.1f}%",
                  "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:,.0f}", f"{r['ratio_to_fp']:.2f}x",
                  f"{r['speedup_over_reference']:.2f}x" if "speedup_over_reference" in r else "-")
    console().print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qbench bench", description=" ".join(__doc__.split("\n\n")[0].split()),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--methods", default="fp,bnn", help="comma-separated methods (fp is always measured)")
    ap.add_argument("--models", default="vgg_small", help="comma-separated models")
    ap.add_argument("--batch-sizes", default="256", help="comma-separated training batch sizes")
    ap.add_argument("--steps", type=int, default=50, help="timed training steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them (compilation, caches)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--reference", action="store_true", help="also time the plain PyTorch reference loop")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop")
    ap.add_argument("--pack", type=int, default=0,
                    help="also run N copies at once on the device and report total throughput vs one run")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.width=3")
    a = ap.parse_args(argv)
    try:
        sizes = [int(b) for b in a.batch_sizes.split(",")]
    except ValueError:
        raise UserError(f"--batch-sizes={a.batch_sizes!r} is invalid; allowed: comma-separated integers") from None
    if a.pack < 0 or a.pack == 1:
        raise UserError(f"--pack={a.pack} is invalid; allowed: 0 (off) or a number of processes >= 2")
    rows = run(a.methods.split(","), a.models.split(","), sizes, a.steps, a.warmup, a.device, a.overrides,
               a.reference, a.workers)
    print_table(rows)
    if a.pack:
        pack_rows = run_packing(a.methods.split(","), a.models.split(","), sizes, a.steps, a.warmup, a.device,
                                a.overrides, a.pack)
        print_packing(pack_rows)
        rows = rows + pack_rows
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {a.json}")
    return 0
