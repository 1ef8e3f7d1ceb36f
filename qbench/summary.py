"""qbench summary: what a method does to a model, layer by layer, and what that saves (Larq's
``lq.models.summary`` for qbench): weight and input bits, parameters, MACs, and the model's size at its
quantized bit widths against float32."""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from qbench.build import build
from qbench.nn.layers import _QuantizedMixin
from qbench.quant.facts import quantizer_bits
from qbench.report import console as default_console


def summarize(cfg: DictConfig) -> dict:
    model = build(cfg).model.eval()
    rows, hooks = [], []

    def record(name):
        def hook(m, inputs, out):
            w_bits, i_bits = quantizer_bits(m.weight_quantizer), quantizer_bits(m.input_quantizer)
            if m is first:
                i_bits = 32  # the first layer reads the data itself, whatever its input quantizer
            per_out = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features
            macs = out.numel() * per_out
            rows.append({"layer": name, "type": type(m).__name__, "output": tuple(out.shape[1:]),
                         "params": sum(p.numel() for p in m.parameters(recurse=False)), "weight_bits": w_bits,
                         "input_bits": i_bits, "macs": macs, "binary": w_bits == 1 and i_bits == 1})
        return hook

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantizedMixin)]
    first = layers[0][1] if layers else None
    for name, m in layers:
        hooks.append(m.register_forward_hook(record(name)))
    with torch.no_grad():
        s = cfg.dataset.image_size
        model(torch.zeros(1, cfg.dataset.in_channels, s, s))
    for h in hooks:
        h.remove()
    layer_params = {id(p) for _, m in layers for p in m.parameters(recurse=False)}
    other = sum(p.numel() for p in model.parameters() if id(p) not in layer_params)
    weight_bits = sum(r["params"] * (r["weight_bits"] if r["weight_bits"] < 32 else 32) for r in rows)
    # a quantized layer's bias (if any) stays float; count it at 32 bits
    for r, (_, m) in zip(rows, layers):
        if r["weight_bits"] < 32 and getattr(m, "bias", None) is not None:
            weight_bits += m.bias.numel() * (32 - r["weight_bits"])
    total = sum(p.numel() for p in model.parameters())
    size_bytes = (weight_bits + 32 * other) / 8
    return {"rows": rows, "params": total, "size_mb": size_bytes / 2 ** 20, "fp32_mb": total * 4 / 2 ** 20,
            "binary_macs": sum(r["macs"] for r in rows if r["binary"]),
            "fp_macs": sum(r["macs"] for r in rows if not r["binary"])}


def print_summary(cfg: DictConfig, s: dict, console: Console | None = None) -> None:
    console = console or default_console()
    t = Table(title=f"{cfg.model.name} with {cfg.method.name} on {cfg.dataset.name}-sized inputs", title_justify="left")
    for col in ("layer", "type", "output", "params", "weight bits", "input bits", "MACs"):
        t.add_column(col, justify="right" if col in ("params", "MACs", "weight bits", "input bits") else "left")
    for r in s["rows"]:
        t.add_row(r["layer"], r["type"], "x".join(map(str, r["output"])), f"{r['params']:,}", str(r["weight_bits"]),
                  str(r["input_bits"]), f"{r['macs']:,}")
    console.print(t)
    macs = s["binary_macs"] + s["fp_macs"]
    console.print(f"parameters {s['params']:,}   size {s['size_mb']:.2f} MB at the quantized bit widths, "
                  f"{s['fp32_mb']:.2f} MB in float32 ({s['fp32_mb'] / max(s['size_mb'], 1e-9):.1f}x smaller)")
    console.print(f"MACs {macs:,}: binary {s['binary_macs']:,} ({100 * s['binary_macs'] / max(macs, 1):.1f}%), "
                  f"full precision / multi-bit {s['fp_macs']:,}")


def print_deployed(export_dir, console: Console | None = None) -> None:
    """The size an export measures on disk, beside the estimate above (``qbench summary run=<run dir>``)."""
    import json
    from pathlib import Path

    console = console or default_console()
    export_dir = Path(export_dir)
    m = json.loads((export_dir / "manifest.json").read_text())
    files = {p.name: p.stat().st_size for p in export_dir.iterdir() if p.is_file()}
    w = m["weight_bytes"]
    console.print(f"deployed (measured from {export_dir}): weights {w['deployed'] / 2 ** 20:.3f} MB packed vs "
                  f"{w['float32'] / 2 ** 20:.3f} MB float32 ({w['float32'] / w['deployed']:.1f}x smaller); files "
                  + ", ".join(f"{k} {v / 2 ** 20:.3f} MB" for k, v in sorted(files.items())), markup=False,
                  highlight=False)
