"""``qbench bench --inference run=<run dir>``: a deployed model (its ``export/``) against its float32 PyTorch
twin -- the same architecture with float weights, eager -- in one invocation: latency at each batch size,
images/s, threads, sizes; and each xnor-popcount conv against the float32 conv of its shape. Ratios are of
figures measured in this run, never of figures from elsewhere."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qbench.errors import UserError


def _paired_medians(a, b, repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, timed in alternation so that both see the same machine (a shared
    VM's speed drifts by tens of percent over seconds)."""
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def _cpu_mhz() -> float | None:
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]
        return max(mhz) if mhz else None
    except OSError:
        return None


def bench_inference(run: Path, batch_sizes: list[int], repeats: int, warmup: int, layers: bool = True) -> dict:
    from qbench.deploy import kernel, load
    from qbench.export import rebuild
    from qbench.build import build_model
    from qbench.methods import build_method

    export = run / "export"
    if not (export / "manifest.json").is_file():
        raise UserError(f"{run} has no export; run qbench export run={run} first")
    deployed = load(export)
    cfg, _, _ = rebuild(run)
    twin = build_model(cfg, build_method(cfg.method)).eval()  # same architecture, float32 weights
    c, h, w = deployed.manifest["input"]["shape"]
    g = torch.Generator().manual_seed(0)
    out = {"run": str(run), "method": deployed.manifest["method"], "model": deployed.manifest["model"],
           "threads": torch.get_num_threads(), "kernel": kernel.backend(), "torch": torch.__version__,
           "cpu_mhz": _cpu_mhz(), "whole_model": [], "layers": []}
    for b in batch_sizes:
        images = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=g)
        x = deployed.normalize(images)
        with torch.no_grad():
            t_dep, t_fp = _paired_medians(lambda: deployed(images), lambda: twin(x), repeats, warmup)
        out["whole_model"].append({"batch": b, "deployed_ms": 1e3 * t_dep, "float32_ms": 1e3 * t_fp,
                                   "deployed_images_s": b / t_dep, "float32_images_s": b / t_fp,
                                   "speedup": t_fp / t_dep})
    files = {p.name: p.stat().st_size for p in export.iterdir()}
    twin_weights = sum(m.weight.numel() * 4 for m in twin.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    out["sizes"] = {"export_files": files, "deployed_weight_bytes": deployed.manifest["weight_bytes"]["deployed"],
                    "float32_weight_bytes": twin_weights,
                    "weights_smaller": twin_weights / deployed.manifest["weight_bytes"]["deployed"]}
    if layers:
        out["layers"] = _per_layer(deployed, twin, (max(batch_sizes), c, h, w), repeats, warmup)
    return out


def _per_layer(deployed, twin, shape, repeats: int, warmup: int) -> list[dict]:
    """Each xnor-popcount conv of the export against the float32 conv of the same shape, on the same threads."""
    from qbench.deploy import kernel

    shapes: dict[str, tuple] = {}
    modules = dict(twin.named_modules())
    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            shapes.setdefault(name, tuple(inputs[0].shape))
        return hook

    hooks = [modules[n["module"]].register_forward_hook(record(n["name"]))
             for n in deployed.nodes if n["name"] in deployed.packed and n["op"] == "conv2d" and n["module"] in modules]
    with torch.no_grad():
        twin(torch.zeros(shape))
    for hk in hooks:
        hk.remove()
    rows = []
    for n in deployed.nodes:
        if n["name"] not in shapes:
            continue
        s = shapes[n["name"]]
        x = torch.randn(s)
        wf = deployed.weights.get(n["name"])
        wf = torch.randn(n["weight"]["shape"]) if wf is None else wf
        geo = (tuple(n["kernel_size"]), tuple(n["stride"]), tuple(n["padding"]), tuple(n["dilation"]))
        t_bin, t_fp = _paired_medians(lambda: kernel.binary_conv2d(x, deployed.packed[n["name"]], *geo),
                                      lambda: F.conv2d(x, wf, None, n["stride"], n["padding"], n["dilation"]),
                                      repeats, warmup)
        o = n["weight"]["shape"][0]
        out_hw = F.conv2d(torch.zeros(1, s[1], *s[2:]), torch.zeros(1, s[1], *geo[0]), None, n["stride"],
                          n["padding"], n["dilation"]).shape[-2:]
        words = s[0] * o * out_hw[0] * out_hw[1] * geo[0][0] * geo[0][1] * kernel.words(s[1])
        rows.append({"layer": n["module"], "input": list(s), "out_channels": o, "binary_ms": 1e3 * t_bin,
                     "float32_ms": 1e3 * t_fp, "speedup": t_fp / t_bin, "popcount_gwords_s": words / t_bin / 1e9})
    return rows


def print_report(r: dict) -> None:
    print(f"{r['method']} {r['model']}: deployed (qbench.deploy) vs its float32 twin (eager PyTorch), "
          f"{r['threads']} threads; kernel: {r['kernel']}; torch {r['torch']}")
    print(f"{'batch':>5} {'deployed ms':>12} {'float32 ms':>11} {'deployed img/s':>15} {'float32 img/s':>14} {'speedup':>8}")
    for w in r["whole_model"]:
        print(f"{w['batch']:>5} {w['deployed_ms']:>12.2f} {w['float32_ms']:>11.2f} {w['deployed_images_s']:>15.0f} "
              f"{w['float32_images_s']:>14.0f} {w['speedup']:>7.2f}x")
    s = r["sizes"]
    print(f"weights: {s['deployed_weight_bytes'] / 1024:.1f} KiB deployed vs {s['float32_weight_bytes'] / 1024:.1f} KiB "
          f"float32 ({s['weights_smaller']:.1f}x smaller); export files: "
          + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in s["export_files"].items()))
    if r["layers"]:
        bound = (r["cpu_mhz"] or 0) * 1e6 * 8 * r["threads"] / 1e9  # VPOPCNTQ: 8 words/cycle/core at 1 per cycle
        print("per xnor-popcount conv (batch as the largest above), against F.conv2d float32 of the same shape:")
        for L in r["layers"]:
            print(f"  {L['layer']:<16} in {'x'.join(map(str, L['input'])):<16} out {L['out_channels']:>4}: binary "
                  f"{L['binary_ms']:8.2f} ms, float32 {L['float32_ms']:8.2f} ms, {L['speedup']:5.2f}x; "
                  f"{L['popcount_gwords_s']:.1f} G words/s" + (f" ({100 * L['popcount_gwords_s'] / bound:.0f}% of "
                                                            f"{bound:.0f}, one VPOPCNTQ per cycle per core)"
                                                            if bound else ""))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="qbench bench --inference", description=" ".join(__doc__.split()),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("run", help="run=<run dir>, a run with an export (qbench export run=<run dir>)")
    ap.add_argument("--batch-sizes", default="1,64", help="comma-separated inference batch sizes")
    ap.add_argument("--repeats", type=int, default=20, help="timed forward passes per batch size (median kept)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed passes before them")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer comparison")
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    if not a.run.startswith("run="):
        raise UserError(f"qbench bench --inference takes run=<run dir>; got {a.run!r}")
    try:
        sizes = [int(b) for b in a.batch_sizes.split(",")]
    except ValueError:
        raise UserError(f"--batch-sizes={a.batch_sizes!r} is invalid; allowed: comma-separated integers") from None
    if a.repeats < 1 or a.warmup < 0 or min(sizes) < 1:
        raise UserError("--repeats, --warmup and --batch-sizes must be positive")
    r = bench_inference(Path(a.run.split("=", 1)[1]).resolve(), sizes, a.repeats, a.warmup, not a.no_layers)
    print_report(r)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0

