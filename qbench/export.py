"""``qbench export``: a finished run's model in real low-bit form, for ``qbench.deploy``.

The trained model is rebuilt from its run directory and traced (torch.fx) into a graph of plain ops; each
quantized layer's weight, *as the training-time forward pass uses it* (eval mode), is stored at its bit width:
  binary   1-bit codes (1: +1, 0: -1) and, unless every one is 1, a float32 alpha per output row
           (BNN, BinaryConnect det, XNOR-Net / BWN's alpha per filter, DoReFa W1's E|w|)
  ternary  2-bit codes (01: +1, 00: 0, 11: -1) and a float32 alpha per output row (TWN; per layer: all equal)
  levels   k-bit indices into the layer's table of at most 2^k float32 values (DoReFa's k-bit grid; any
           quantizer whose layer takes few values)
  float    float32, for the layers the method keeps full precision (first/last layers of XNOR-Net, DoReFa)
The codec is found from the values themselves and checked by decoding: the export refuses a layer whose
decoded weight is not bit-for-bit the quantized weight. Batch norm is stored as its four per-channel vectors.
"""
from __future__ import annotations

import functools
import json
import math
import operator
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import qbench
from qbench.deploy.engine import FORMAT, FORMAT_VERSION, decode_weight, sha256_of
from qbench.deploy.packing import pack_codes
from qbench.errors import UserError

# methods whose trained model has a static low-bit form this exporter writes (no schedule state to restore)
EXPORTABLE = ("binaryconnect", "binaryrelax", "bnn", "bottom_up", "bwn", "dorefa", "inq", "ptq", "qat", "sq_bwn",
              "sq_twn", "twn", "wage", "xnor")
WEIGHT_TENSORS = (".weight_codes", ".alpha", ".levels", ".weight", ".scale", ".zero_point")  # a layer's weight
NO_LOW_BIT_FORM = {"fp": "a full-precision model has no low-bit form (quantize it first: qbench ptq)"}


def _fn_name(q) -> tuple[str, dict]:
    kwargs = dict(q.keywords) if isinstance(q, functools.partial) else {}
    fn = q.func if isinstance(q, functools.partial) else q
    return getattr(fn, "__name__", type(fn).__name__), kwargs


def _affine_qparams(q, lo, hi) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    scale, zero_point, qmin, qmax = q.qparams(lo, hi)
    return (torch.as_tensor(scale, dtype=torch.float32).reshape(-1),
            torch.as_tensor(zero_point, dtype=torch.float32).reshape(-1), int(qmin), int(qmax))


def input_quantizer_spec(q, where: str, tensors: dict, name: str) -> dict:
    """What a layer does to its input at test time, in the engine's terms (a FakeQuant's frozen range becomes
    its scale and zero-point, stored as float32 tensors ``<name>.input_scale`` / ``.input_zero_point``)."""
    from qbench.nn import FakeQuant

    if q is None:
        return {"kind": "none"}
    if isinstance(q, FakeQuant):  # and its FixedPoint (bottom-to-top): scale 2^-f, zero-point 0
        if q.per_channel or q.min_val.numel() == 0:
            raise UserError(f"{where}: its input quantizer {q.describe()} has no deploy form yet (a per-tensor "
                            "FakeQuant with an observed range has)")
        if q.bits == 32 or not q.enabled:
            return {"kind": "none"}
        scale, zero_point, qmin, qmax = _affine_qparams(q, q.min_val, q.max_val)
        tensors[f"{name}.input_scale"], tensors[f"{name}.input_zero_point"] = scale, zero_point
        return {"kind": "affine", "bits": q.bits, "qmin": qmin, "qmax": qmax}
    name, kw = _fn_name(q)
    if name in ("sign", "ste_sign", "approx_sign") or (name == "binarize" and kw.get("scaling", "none") == "none"):
        return {"kind": "sign"}  # binarize(stochastic=True) samples at train time only: sign at test time
    if name == "dorefa_activation":
        return {"kind": "none"} if int(kw["k"]) == 32 else {"kind": "dorefa", "bits": int(kw["k"])}
    if name == "wage_activation":  # its error_bits / gamma act on the backward pass only
        return {"kind": "wage", "bits": int(kw.get("bits", 8))}
    raise UserError(f"{where}: input quantizer {name} has no deploy form yet; valid: sign (BNN, XNOR-Net), "
                    "dorefa_activation, wage_activation")


def _forward_identity(q) -> bool:
    """Output quantizers that only act on the gradient (DoReFa's eq. 12, WAGE's errors) are identity at test time."""
    return q is None or _fn_name(q)[0] in ("dorefa_gradient_ste", "wage_error")


def weight_codec(wq: torch.Tensor, where: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The smallest exact form of a quantized weight: (spec, tensors named by suffix)."""
    rows = wq.reshape(wq.shape[0], -1).float()
    shape = list(wq.shape)
    mag = rows.abs()
    alpha = mag.amax(1)
    on_grid = (mag == alpha[:, None]) | (mag == 0)
    if bool(on_grid.all()):
        ternary = bool((mag == 0).any())
        if not ternary and bool((alpha > 0).all()):
            codes = (rows > 0).long()
            spec = {"codec": "binary", "bits": 1, "shape": shape}
        else:
            codes = torch.where(rows > 0, 1, torch.where(rows < 0, 3, 0))
            spec = {"codec": "ternary", "bits": 2, "shape": shape}
        out = {"weight_codes": pack_codes(codes, spec["bits"])}
        if not bool((alpha == 1).all()) or spec["codec"] == "ternary":
            out["alpha"] = alpha.contiguous()
    else:
        levels = torch.unique(rows)
        if len(levels) > 256:
            raise UserError(f"{where}: its trained weights take {len(levels)} distinct values, not a low-bit form")
        bits = max(1, math.ceil(math.log2(len(levels))))
        codes = torch.searchsorted(levels, rows.contiguous())
        spec = {"codec": "levels", "bits": bits, "shape": shape, "levels": len(levels)}
        out = {"weight_codes": pack_codes(codes, bits), "levels": levels.contiguous()}
    decoded = decode_weight(spec, {f"w.{k}": v for k, v in out.items()}, "w")
    if not torch.equal(decoded, wq.float()):  # the stored form must stand for exactly what training computed
        raise UserError(f"{where}: its {spec['codec']} form does not reproduce the quantized weight exactly")
    return spec, out


def affine_weight_codec(q, w: torch.Tensor, wq: torch.Tensor, where: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A FakeQuant weight (QAT, PTQ; whitepaper eq. 1-3) as its integers: code = clamp(round(w / s) + z, qmin,
    qmax) - qmin, k-bit, with s and z per layer or per output channel; value = (code + qmin - z) * s."""
    lo, hi = q._batch_range(w)
    scale, zero_point, qmin, qmax = _affine_qparams(q, lo, hi)
    rows = w.reshape(w.shape[0], -1).float()
    s, z = (scale.view(-1, 1), zero_point.view(-1, 1))
    codes = (torch.round(rows * (1.0 / s)) + z).clamp(qmin, qmax) - qmin
    spec = {"codec": "affine", "bits": q.bits, "shape": list(w.shape), "qmin": qmin,
            "per_channel": bool(q.per_channel)}
    out = {"weight_codes": pack_codes(codes.long(), q.bits), "scale": scale.contiguous(),
           "zero_point": zero_point.contiguous()}
    decoded = decode_weight(spec, {f"w.{k}": v for k, v in out.items()}, "w")
    if not torch.equal(decoded, wq.float()):
        raise UserError(f"{where}: its affine form does not reproduce the quantized weight exactly")
    return spec, out


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        from qbench.nn.bn_fold import FoldedConvBN
        from qbench.nn.layers import _QuantizedMixin

        return isinstance(m, (_QuantizedMixin, FoldedConvBN)) or super().is_leaf_module(m, name)


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def build_graph(model: nn.Module) -> tuple[list[dict], dict[str, torch.Tensor], list[dict]]:
    """(graph nodes, tensors, per-layer rows) of an eval-mode model."""
    from qbench.nn.bn_fold import FoldedConvBN
    from qbench.nn.layers import _QuantizedMixin

    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 -- any tracing failure: this model has no graph form
        raise UserError(f"the model cannot be traced into a deploy graph ({str(e).splitlines()[0]})") from None
    nodes, tensors, layers = [], {}, []
    names: dict[torch.fx.Node, str] = {}

    def ref(a):
        if isinstance(a, torch.fx.Node):
            return names[a]
        raise UserError(f"unsupported argument {a!r} in the traced graph")

    for n in graph.nodes:
        name = n.name
        names[n] = name
        node: dict = {"name": name}
        if n.op == "placeholder":
            node["op"] = "input"
        elif n.op == "output":
            node.update(op="output", inputs=[ref(n.args[0])])
        elif n.op == "call_module":
            m = model.get_submodule(n.target)
            node["inputs"] = [ref(n.args[0])]
            node["module"] = n.target
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                layers.append(_layer(node, m, n.target, tensors, isinstance(m, _QuantizedMixin)))
            elif isinstance(m, FoldedConvBN):  # QAT's folded conv + batch norm: one conv, as deployed
                layers.append(_folded_layer(node, m, n.target, tensors))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.running_mean is None:
                    raise UserError(f"layer {n.target}: batch norm without running statistics has no deploy form")
                node.update(op="batch_norm", eps=m.eps)
                for k in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(m, k) is not None:
                        tensors[f"{name}.{k}"] = getattr(m, k).detach().float().contiguous()
            elif isinstance(m, nn.Hardtanh):
                node.update(op="hardtanh", min=m.min_val, max=m.max_val)
            elif isinstance(m, nn.ReLU):
                node["op"] = "relu"
            elif isinstance(m, nn.LeakyReLU):
                node.update(op="leaky_relu", slope=m.negative_slope)
            elif isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d)):
                node["op"] = "identity"
            elif isinstance(m, nn.Flatten):
                node.update(op="flatten", start_dim=m.start_dim, end_dim=m.end_dim)
            elif isinstance(m, nn.MaxPool2d):
                node.update(op="max_pool2d", kernel_size=_pair(m.kernel_size),
                            stride=_pair(m.stride or m.kernel_size), padding=_pair(m.padding),
                            dilation=_pair(m.dilation), ceil_mode=m.ceil_mode)
            elif isinstance(m, nn.AvgPool2d):
                node.update(op="avg_pool2d", kernel_size=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
                            padding=_pair(m.padding), ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                node.update(op="adaptive_avg_pool2d", output_size=_pair(m.output_size))
            else:
                raise UserError(f"layer {n.target} ({type(m).__name__}) has no deploy form yet")
        elif n.op in ("call_function", "call_method"):
            node.update(_function(n, ref))
        else:
            raise UserError(f"graph node {n.op} {n.target} has no deploy form yet")
        nodes.append(node)
    return nodes, tensors, layers


def _function(n: torch.fx.Node, ref) -> dict:
    t, args, kw = n.target, n.args, n.kwargs
    if t in (operator.add, torch.add, "add"):
        return {"op": "add", "inputs": [ref(args[0]), ref(args[1])]}
    if t in (torch.flatten, "flatten"):
        return {"op": "flatten", "inputs": [ref(args[0])], "start_dim": args[1] if len(args) > 1 else kw.get("start_dim", 0),
                "end_dim": args[2] if len(args) > 2 else kw.get("end_dim", -1)}
    if t is torch.cat:
        return {"op": "cat", "inputs": [ref(a) for a in args[0]], "dim": args[1] if len(args) > 1 else kw.get("dim", 0)}
    if t in (F.relu, torch.relu, "relu"):
        return {"op": "relu", "inputs": [ref(args[0])]}
    if t is operator.getitem and isinstance(args[1], tuple):
        index = [[s.start, s.stop, s.step] if isinstance(s, slice) else s for s in args[1]]
        if all(isinstance(s, list) or s is Ellipsis for s in index) and Ellipsis not in index:
            return {"op": "slice", "inputs": [ref(args[0])], "index": index}
    if t is F.pad:
        return {"op": "pad", "inputs": [ref(args[0])], "pad": list(args[1]), "mode": kw.get("mode", "constant"),
                "value": kw.get("value", 0.0) if len(args) < 4 else args[3]}
    raise UserError(f"graph op {getattr(t, '__name__', t)} has no deploy form yet")


def _layer(node: dict, m, path: str, tensors: dict, quantized: bool) -> dict:
    conv = isinstance(m, nn.Conv2d)
    node["op"] = "conv2d" if conv else "linear"
    where = f"layer {path}"
    if quantized:
        from qbench.quant.scaled import xnor_activation_scale

        if not _forward_identity(m.output_quantizer):
            raise UserError(f"{where}: output quantizer {_fn_name(m.output_quantizer)[0]} has no deploy form yet")
        node["input_quantizer"] = input_quantizer_spec(m.input_quantizer, where, tensors, node["name"])
        scale = m.input_scale
        if scale is not None and getattr(scale, "func", scale) is not xnor_activation_scale:
            raise UserError(f"{where}: input scale {_fn_name(scale)[0]} has no deploy form yet")
        node["input_scale"] = "xnor" if scale is not None else None
        wq = m.quantized_weight() if m.weight_quantizer is not None else m.weight.detach()
    else:
        node["input_quantizer"], node["input_scale"], wq = {"kind": "none"}, None, m.weight.detach()
    if conv:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UserError(f"{where}: padding {m.padding!r} ({m.padding_mode}) has no deploy form yet")
        node.update(kernel_size=list(m.kernel_size), stride=list(m.stride), padding=list(m.padding),
                    dilation=list(m.dilation), groups=m.groups)
    from qbench.nn import FakeQuant

    if quantized and type(m.weight_quantizer) is FakeQuant and m.weight_quantizer.bits <= 8:
        spec, stored = affine_weight_codec(m.weight_quantizer, m.weight.detach(), wq.detach(), where)
    elif quantized and m.weight_quantizer is not None:
        spec, stored = weight_codec(wq.detach(), where)
    else:
        spec, stored = {"codec": "float", "bits": 32, "shape": list(wq.shape)}, {"weight": wq.float().contiguous()}
    node["weight"] = spec
    for k, v in stored.items():
        tensors[f"{node['name']}.{k}"] = v
    if m.bias is not None:
        tensors[f"{node['name']}.bias"] = m.bias.detach().float().contiguous()
    return {"layer": path, "node": node["name"], "op": node["op"], "codec": spec["codec"], "bits": spec["bits"],
            "shape": spec["shape"], "input": node["input_quantizer"]["kind"],
            "alpha": f"{node['name']}.alpha" in tensors}


def _folded_layer(node: dict, m, path: str, tensors: dict) -> dict:
    """Whitepaper section 3.2 at inference: y = conv(x, Q(W gamma / sigma)) + (beta - gamma mu / sigma), the
    folded bias added after the convolution as FoldedConvBN adds it."""
    conv, bn = m.conv, m.bn
    with torch.no_grad():
        sigma = torch.sqrt(bn.running_var + bn.eps)
        w_fold = conv.weight * (bn.weight / sigma).view(-1, 1, 1, 1)
        bias = bn.bias - bn.weight * bn.running_mean / sigma
        saved = conv.weight.data
        conv.weight.data = w_fold  # the folded weight goes through the layer's own quantizer
        try:
            row = _layer(node, conv, path, tensors, True)
        finally:
            conv.weight.data = saved
    tensors[f"{node['name']}.bias"] = bias.detach().float().contiguous()
    node["bias_after"] = True  # conv without bias, then + bias: the order FoldedConvBN computes in
    row["folded_batch_norm"] = True
    return row


# --- a run's model -----------------------------------------------------------------------------------------

def finished_run(run: Path) -> tuple:
    """(config, summary) of a finished run with a checkpoint; a UserError otherwise."""
    from qbench.config import load_run_config

    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a qbench run directory (no config.yaml)")
    try:
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    except json.JSONDecodeError:
        summary = {}  # unreadable: not a finished run
    status = summary.get("status")
    if status != "completed" or not (run / "checkpoints" / "last.pt").is_file():
        raise UserError(f"export needs a finished run with a checkpoint; {run} has status {status or 'unknown'}")
    return load_run_config(run), summary


def check_exportable(cfg) -> None:
    from qbench.data.loader import in_memory

    name = cfg.method.name
    if name in NO_LOW_BIT_FORM:
        raise UserError(f"method {name!r}: {NO_LOW_BIT_FORM[name]}; exportable methods: {', '.join(EXPORTABLE)}")
    if name == "binaryconnect" and cfg.method.get("mode") == "stoch":
        raise UserError("method 'binaryconnect' with method.mode=stoch tests with its real-valued weights (section "
                        "2.6), so it has no low-bit form; det has one")
    if name not in EXPORTABLE:
        raise UserError(f"method {name!r} has no deploy export yet; exportable methods: {', '.join(EXPORTABLE)}")
    ds = cfg.dataset
    if ds.get("gcn") or ds.get("lcn") or ds.get("zca"):
        raise UserError("runs with dataset.gcn / lcn / zca have no deploy export yet: the engine normalizes by "
                        "mean and std only")
    if not in_memory(ds):
        raise UserError(f"{ds.name} runs have no deploy export yet: the engine takes the in-memory datasets' images")


def rebuild(run: Path):
    """(cfg, summary, eval-mode model with the run's last weights) of a finished run, on the CPU."""
    from qbench.build import build
    from qbench.checkpoint import load_checkpoint
    from qbench.methods.callbacks import replay_epoch_start

    cfg, summary = finished_run(run)
    check_exportable(cfg)
    OmegaConf.update(cfg, "method.init", None, force_add=True)  # the checkpoint holds every weight
    torch.manual_seed(int(cfg.seed))
    built = build(cfg)
    method, model = built.method, built.model
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    try:
        model.load_state_dict(state["model"])
        for cb, s in zip(method.callbacks, state.get("callbacks") or []):
            cb.load_state_dict(s)
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"checkpoint of {run} does not match its config ({str(e).splitlines()[0]})") from None
    # the quantizers a schedule set for the last epoch (SQ's ratio, BinaryRelax's exact projection)
    last = int(summary.get("epochs_completed", cfg.trainer.epochs)) - 1
    replay_epoch_start(method.callbacks, model, last, int(cfg.trainer.epochs))
    return cfg, summary, model.eval()


FORMATS = ("qbench", "onnx")


def export_run(run: Path, fmt: str = "qbench", out: Path | None = None, float_weights: bool = False,
               image: str = "uint8") -> Path:
    """Write ``<run>/export`` (or ``out``): ``model.safetensors`` and ``manifest.json``; with ``fmt="onnx"``
    ``<run>/export-onnx``: ``model.onnx`` and ``manifest.json``. All or nothing."""
    from qbench.deploy.engine import _safetensors

    save_file = _safetensors().save_file

    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r} is invalid; valid: {', '.join(FORMATS)}")
    if float_weights and fmt != "onnx":
        raise UserError("float_weights=true is for format=onnx (a float ONNX model of the low-bit values)")
    if image not in ("uint8", "float"):
        raise UserError(f"image={image!r} is invalid; valid: uint8 (0..255), float ([0, 1])")
    if image != "uint8" and fmt != "onnx":
        raise UserError("image=float is for format=onnx (qbench.deploy takes either)")
    run = run.resolve()
    out = (out or run / ("export" if fmt == "qbench" else "export-onnx")).resolve()
    if out.exists():
        raise UserError(f"{out} exists; qbench never overwrites an export (remove it, or give out=<new folder>)")
    cfg, summary, model = rebuild(run)
    nodes, tensors, layers = build_graph(model)
    ds = cfg.dataset
    input_spec = {"shape": [int(ds.in_channels), int(ds.image_size), int(ds.image_size)],
                  "layout": "NCHW", "range": "uint8 0..255, or float in [0, 1]",
                  "mean": list(ds.mean), "std": list(ds.std),
                  "normalize": "x = (image / 255 - mean) / std, per channel, in float32"}
    if not any(r["codec"] != "float" for r in layers):
        raise UserError(f"{run} has no layer with low-bit weights to export")
    onnx_model = None
    if fmt == "onnx":  # built (and checked) before anything is written
        from qbench.deploy.engine import DeployError
        from qbench.deploy.onnx_export import to_onnx

        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("format=onnx needs onnx: pip install 'qbench[deploy]'") from None
        head = {"method": cfg.method.name, "model": cfg.model.name, "num_classes": int(cfg.dataset.num_classes),
                "source_run": str(run), "graph": nodes, "input": input_spec}
        try:
            onnx_model = to_onnx(head, tensors, float_weights, image)
        except DeployError as e:
            raise UserError(f"format=onnx: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        if onnx_model is not None:
            (tmp / "model.onnx").write_bytes(onnx_model.SerializeToString())
        else:
            save_file(tensors, str(tmp / "model.safetensors"))
        tensor_file = "model.onnx" if onnx_model is not None else "model.safetensors"
        float_bytes = sum(4 * math.prod(r["shape"]) for r in layers)
        manifest = {
            "format": FORMAT if fmt == "qbench" else "qbench-onnx", "format_version": FORMAT_VERSION,
            "method": cfg.method.name, "model": cfg.model.name, "dataset": ds.name,
            "input": input_spec,
            "num_classes": int(ds.num_classes),
            "source_run": str(run), "qbench_commit": summary.get("qbench_commit"),
            "qbench_version": qbench.__version__, "final_val_acc": summary.get("final_val_acc"),
            "tensors": {"file": tensor_file, "sha256": sha256_of(tmp / tensor_file)},
            "onnx": None if onnx_model is None else {
                "opset": onnx_model.opset_import[0].version,
                "input": f"image: {'float in [0, 1]' if image == 'float' else 'uint8 0..255'}, N x C x H x W",
                "output": "logits", "kind": "float weights: the low-bit weights' values, activation quantizers as "
                                            "elementwise ops (a float model, for portability)" if float_weights else
                "int8 QDQ: QuantizeLinear / DequantizeLinear around each quantized layer; batch norm "
                + ("folded into the convolutions, as the run trained it (whitepaper section 3.2)"
                   if any(r.get("folded_batch_norm") for r in layers) else
                   "as BatchNormalization after the convolution, as the run trained it")},
            "packing": {"axis": "each output row (weight[o].flatten(): input channel, kernel row, kernel column)",
                        "bit_order": "little-endian bit stream: element i in bits k*i..k*i+k-1, bit j = bit j % 8 "
                                     "of byte j // 8; each row starts on a byte; pad bits 0",
                        "binary": "1: +1, 0: -1", "ternary": "01: +1, 00: 0, 11: -1",
                        "levels": "index into <node>.levels (float32, ascending)",
                        "affine": "weight = (code + qmin - zero_point) * scale, per layer or per output row",
                        "value": "weight = alpha[o] * code value (alpha absent: 1); levels: levels[code]"},
            "layers": layers,
            "weight_bytes": {"deployed": sum(v.numel() * v.element_size() for k, v in tensors.items()
                                             if k.endswith(WEIGHT_TENSORS)),
                             "float32": float_bytes},
            "graph": nodes,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class OnnxModel:
    """An ONNX export run by onnxruntime on the CPU, called like a ``DeployedModel`` (uint8 images)."""

    packed: dict = {}

    def __init__(self, export_dir: Path):
        from qbench.deploy.engine import read_manifest

        self.manifest, path = read_manifest(export_dir, ("qbench-onnx",))
        try:
            import onnxruntime
        except ImportError:
            raise UserError("an ONNX export needs onnxruntime: pip install 'qbench[deploy]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        wants_float = self.session.get_inputs()[0].type == "tensor(float)"
        if wants_float and images.dtype == torch.uint8:
            images = images.float().div_(255)  # as the data pipeline scales its uint8 images
        elif not wants_float and images.dtype != torch.uint8:
            raise UserError("this ONNX export takes uint8 images (0..255); export with image=float for [0, 1]")
        return torch.from_numpy(self.session.run(["logits"], {"image": images.contiguous().numpy()})[0])

    def describe(self) -> list[dict]:
        return [{"layer": r["node"], "op": r["op"], "weight": r["codec"], "bits": r["bits"], "input": r["input"],
                 "path": "onnxruntime, " + self.manifest["onnx"]["kind"].split(":")[0]} for r in self.manifest["layers"]]


# --- qbench evaluate ------------------------------------------------------------------------------------

def evaluate_export(export_dir: Path, backend: str = "auto", limit: int | None = None) -> dict:
    """The deployed model and the training-time (fake-quant) model it came from, image by image on the run's
    test split: both accuracies, how many predicted classes differ, and the largest logit difference."""
    from qbench.config import check_data
    from qbench.data import build_data
    from qbench.deploy import kernel, load

    from qbench.deploy.engine import read_manifest

    if read_manifest(Path(export_dir))[0]["format"] == "qbench-onnx":
        deployed = OnnxModel(Path(export_dir))
    else:
        deployed = load(export_dir, backend)
    m = deployed.manifest
    run = Path(m["source_run"])
    if not run.is_dir():
        raise UserError(f"the export's source run {run} is not here; evaluate needs it for the dataset settings "
                        "and the training-time model")
    cfg, summary, reference = rebuild(run)
    check_data(cfg)
    data = build_data(cfg, torch.device("cpu"), int(cfg.seed))
    loader = data.test if data.test is not None else data.val
    n = len(loader.labels) if limit is None else min(limit, len(loader.labels))
    seen = same = right_dep = right_ref = 0
    max_diff = 0.0
    bs = loader.batch_size
    for i, (x, y) in enumerate(loader):
        if seen >= n:
            break
        raw = loader.images[i * bs:(i + 1) * bs]
        x, y, raw = x[: n - seen], y[: n - seen], raw[: n - seen]
        with torch.no_grad():
            ref = reference(x).float()
        dep = deployed(raw)
        right_ref += int((ref.argmax(1) == y).sum())
        right_dep += int((dep.argmax(1) == y).sum())
        same += int((ref.argmax(1) == dep.argmax(1)).sum())
        max_diff = max(max_diff, float((ref - dep).abs().max()))
        seen += len(y)
    return {"export": str(export_dir), "method": m["method"], "model": m["model"], "dataset": m["dataset"],
            "images": seen, "deployed_acc": right_dep / seen, "fake_quant_acc": right_ref / seen,
            "same_prediction": same, "max_abs_logit_diff": max_diff,
            "run_final_val_acc": summary.get("final_val_acc"), "run_test_acc_at_best_val":
                summary.get("test_acc_at_best_val"), "kernel": kernel.backend() if deployed.packed else "none needed",
            "layers": deployed.describe()}
