"""A qbench deploy graph as ONNX: integer QDQ (QuantizeLinear / DequantizeLinear around every quantized
layer, the whitepaper's integer inference as onnxruntime runs it) for QAT and PTQ, or float weights for
portability (``float_weights``: binary / ternary / k-bit weights written as the float values they stand for,
activation quantizers as elementwise ops; a float model, said so in its metadata).

The graph takes the raw image, uint8 0..255 NCHW, and holds the dataset's normalization, so onnxruntime and
the images are all a user needs.
"""
from __future__ import annotations

import numpy as np
import torch

from qbench.deploy.engine import DeployError, decode_weight

OPSET = 19


class _Builder:
    def __init__(self):
        from onnx import helper

        self.h = helper
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        arr = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value, dtype=dtype)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.count += 1
        out = name or f"{op_type.lower()}_{self.count}"
        self.nodes.append(self.h.make_node(op_type, inputs, [out], name=f"n{self.count}_{op_type}", **attrs))
        return out


def _affine_input(b: _Builder, x: str, spec: dict, t: dict, name: str) -> str:
    """QuantizeLinear -> DequantizeLinear: x_q = (clamp(round(x / s) + z, 0, 255) - z) * s, uint8."""
    if spec["qmin"] != 0 or spec["qmax"] > 255:
        raise DeployError(f"layer {name}: its input range [{spec['qmin']}, {spec['qmax']}] is not uint8")
    s = b.const(f"{name}.input_scale", t[f"{name}.input_scale"].reshape(()))
    z = b.const(f"{name}.input_zero_point", t[f"{name}.input_zero_point"].reshape(()), np.uint8)
    q = b.op("QuantizeLinear", [x, s, z])
    if spec["qmax"] < 255:  # fewer than 8 bits: saturate at the k-bit grid's top
        q = b.op("Clip", [q, b.const(f"{name}.qmin", 0, np.uint8), b.const(f"{name}.qmax", spec["qmax"], np.uint8)])
    return b.op("DequantizeLinear", [q, s, z])


def _affine_weight(b: _Builder, spec: dict, t: dict, name: str) -> str:
    """The weight's integers as an int8 / uint8 initializer and its DequantizeLinear (per output channel)."""
    from qbench.deploy.packing import unpack_codes

    shape = spec["shape"]
    codes = unpack_codes(t[f"{name}.weight_codes"], int(np.prod(shape[1:])), spec["bits"]) + spec["qmin"]
    signed = spec["qmin"] < 0
    dtype = np.int8 if signed else np.uint8
    q = b.const(f"{name}.weight_q", codes.reshape(shape), dtype)
    s, z = t[f"{name}.scale"], t[f"{name}.zero_point"]
    per_channel = spec.get("per_channel") and len(s) > 1
    sc = b.const(f"{name}.weight_scale", s if per_channel else s.reshape(()))
    zp = b.const(f"{name}.weight_zero_point", z if per_channel else z.reshape(()), dtype)
    return b.op("DequantizeLinear", [q, sc, zp], **({"axis": 0} if per_channel else {}))


def _uniform_weight(b: _Builder, spec: dict, t: dict, name: str) -> str | None:
    """A binary, ternary or k-bit weight whose values are integers times one step (per layer, or per output row
    for alpha): int8 codes and DequantizeLinear. code * step equals each value to within 1e-6 of the layer's
    largest (DoReFa's 2 i / n - 1 is a few units in the last place off i' / n in float32). None if not (INQ's
    powers of two span more than int8, say)."""
    w = decode_weight(spec, t, name)
    rows = w.reshape(w.shape[0], -1)
    if spec["codec"] in ("binary", "ternary"):  # +-alpha[o] (and 0): step alpha per output row
        step = rows.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    else:
        nonzero = rows.abs()[rows != 0]
        if not len(nonzero):
            return None
        step = nonzero.min().reshape(1)
    q = torch.round(rows / step.view(-1, 1))
    if q.abs().max() > 127 or (q * step.view(-1, 1) - rows).abs().max() > 1e-6 * rows.abs().max():
        return None
    per_row = len(step) > 1
    codes = b.const(f"{name}.weight_q", q.reshape(w.shape), np.int8)
    sc = b.const(f"{name}.weight_scale", step if per_row else step.reshape(()))
    zp = b.const(f"{name}.weight_zero_point", np.zeros(len(step) if per_row else ()), np.int8)
    return b.op("DequantizeLinear", [codes, sc, zp], **({"axis": 0} if per_row else {}))


def _uniform_input(b: _Builder, x: str, spec: dict, name: str) -> str | None:
    """DoReFa's and WAGE's activation grids as QuantizeLinear / Clip / DequantizeLinear (None for sign)."""
    kind = spec["kind"]
    if kind == "dorefa":  # round(clip(x, 0, 1) n) / n: uint8, scale 1/n, codes 0..n
        n = 2 ** spec["bits"] - 1
        s, z, lo, hi, dtype = 1.0 / n, 0, 0, n, np.uint8
    elif kind == "wage":  # clip(round(x / s) s, -1 + s, 1 - s), s = 2^(1-k): int8 codes -(2^(k-1) - 1) .. 2^(k-1) - 1
        s, z, hi, dtype = 2.0 ** (1 - spec["bits"]), 0, 2 ** (spec["bits"] - 1) - 1, np.int8
        lo = -hi
    else:
        return None
    sc, zp = b.const(f"{name}.input_scale", s), b.const(f"{name}.input_zero_point", z, dtype)
    q = b.op("QuantizeLinear", [x, sc, zp])
    q = b.op("Clip", [q, b.const(f"{name}.qlo", lo, dtype), b.const(f"{name}.qhi", hi, dtype)])
    return b.op("DequantizeLinear", [q, sc, zp])


def _xnor_scale(b: _Builder, x: str, node: dict) -> str:
    """XNOR-Net eq. 11 as ONNX ops: K = mean over channels of |x|, filtered by a kh x kw box of 1 / (kh kw) with the
    layer's stride, padding and dilation (for a linear layer: the mean of |x| over its features)."""
    name = node["name"]
    a = b.op("ReduceMean", [b.op("Abs", [x]), b.const(f"{name}.k_axes", [1], np.int64)], keepdims=1)
    if node["op"] == "linear":
        return a
    kh, kw = node["kernel_size"]
    box = b.const(f"{name}.k_box", np.full((1, 1, kh, kw), 1.0 / (kh * kw)))
    p = node["padding"]
    return b.op("Conv", [a, box], kernel_shape=[kh, kw], strides=node["stride"], pads=[p[0], p[1], p[0], p[1]],
                dilations=node["dilation"])


def _sign(b: _Builder, x: str, name: str) -> str:
    one, minus = b.const(f"{name}.one", 1.0), b.const(f"{name}.minus_one", -1.0)
    return b.op("Where", [b.op("GreaterOrEqual", [x, b.const(f"{name}.zero", 0.0)]), one, minus])


def _float_input(b: _Builder, x: str, spec: dict, name: str) -> str:
    kind = spec["kind"]
    if kind == "sign":
        return _sign(b, x, name)
    if kind == "dorefa":  # round(clip(x, 0, 1) n) / n
        n = float(2 ** spec["bits"] - 1)
        c = b.op("Clip", [x, b.const(f"{name}.lo", 0.0), b.const(f"{name}.hi", 1.0)])
        return b.op("Div", [b.op("Round", [b.op("Mul", [c, b.const(f"{name}.n", n)])]), b.const(f"{name}.n2", n)])
    if kind == "wage":
        s = 2.0 ** (1 - spec["bits"])
        r = b.op("Mul", [b.op("Round", [b.op("Div", [x, b.const(f"{name}.s", s)])]), b.const(f"{name}.s2", s)])
        return b.op("Clip", [r, b.const(f"{name}.lo", -1 + s), b.const(f"{name}.hi", 1 - s)])
    raise DeployError(f"layer {name}: input quantizer {kind} has no ONNX form")


def to_onnx(manifest: dict, t: dict[str, torch.Tensor], float_weights: bool = False, image: str = "uint8"):
    """The ONNX ModelProto of a deploy graph; ``image``: its input, uint8 (0..255) or float ([0, 1])."""
    from onnx import TensorProto, checker, helper

    b = _Builder()
    c, h, w = manifest["input"]["shape"]
    env: dict[str, str] = {}
    integer = not float_weights
    for node in manifest["graph"]:
        op, name = node["op"], node["name"]
        ins = [env[i] for i in node.get("inputs", [])]
        if op == "input":
            x = ("image" if image == "float" else
                 b.op("Div", [b.op("Cast", ["image"], to=TensorProto.FLOAT), b.const("pixel_max", 255.0)]))
            mean = b.const("mean", np.asarray(manifest["input"]["mean"]).reshape(1, -1, 1, 1))
            std = b.const("std", np.asarray(manifest["input"]["std"]).reshape(1, -1, 1, 1))
            env[name] = b.op("Div", [b.op("Sub", [x, mean]), std])
        elif op == "output":
            b.op("Identity", [ins[0]], name="logits")
        elif op in ("conv2d", "linear"):
            spec, iq = node["weight"], node["input_quantizer"]
            scale = _xnor_scale(b, ins[0], node) if node.get("input_scale") == "xnor" else None
            if iq["kind"] == "affine" and integer:
                x = _affine_input(b, ins[0], iq, t, name)
            elif iq["kind"] == "none":
                x = ins[0]
            elif integer:
                x = _uniform_input(b, ins[0], iq, name)
                if x is None:
                    raise DeployError(f"layer {name}: its {iq['kind']} input has no integer ONNX form (a uniform "
                                      "grid of at most 8 bits has); add float_weights=true for a float ONNX model")
            else:
                x = _float_input(b, ins[0], iq, name)
            if spec["codec"] == "affine" and integer:
                wt = _affine_weight(b, spec, t, name)
            elif spec["codec"] == "float" or float_weights:
                wt = b.const(f"{name}.weight", decode_weight(spec, t, name))
            else:
                wt = _uniform_weight(b, spec, t, name)
                if wt is None:
                    raise DeployError(f"layer {name}: its {spec['codec']} weights are not int8 steps of one scale; "
                                      "add float_weights=true for a float ONNX model of the same values")
            args = [x, wt] + ([b.const(f"{name}.bias", t[f"{name}.bias"])] if f"{name}.bias" in t else [])
            # QAT's folded bias (bias_after) goes into the Conv too: onnxruntime's QLinearConv adds it in int32
            if op == "conv2d":
                p = node["padding"]
                env[name] = b.op("Conv", args, kernel_shape=node["kernel_size"], strides=node["stride"],
                                 pads=[p[0], p[1], p[0], p[1]], dilations=node["dilation"], group=node["groups"])
            else:
                env[name] = b.op("Gemm", args, transB=1)
            if scale is not None:
                env[name] = b.op("Mul", [env[name], scale])
        elif op == "batch_norm":
            n_ch = len(t[f"{name}.running_mean"])
            gamma = t.get(f"{name}.weight", torch.ones(n_ch))
            beta = t.get(f"{name}.bias", torch.zeros(n_ch))
            env[name] = b.op("BatchNormalization", [ins[0], b.const(f"{name}.gamma", gamma), b.const(f"{name}.beta", beta),
                                                    b.const(f"{name}.mean", t[f"{name}.running_mean"]),
                                                    b.const(f"{name}.var", t[f"{name}.running_var"])],
                             epsilon=float(node["eps"]))
        elif op == "hardtanh":
            env[name] = b.op("Clip", [ins[0], b.const(f"{name}.lo", node["min"]), b.const(f"{name}.hi", node["max"])])
        elif op == "relu":
            env[name] = b.op("Relu", ins)
        elif op == "leaky_relu":
            env[name] = b.op("LeakyRelu", ins, alpha=float(node["slope"]))
        elif op == "identity":
            env[name] = ins[0]
        elif op in ("max_pool2d", "avg_pool2d"):
            p = node["padding"]
            kw = dict(kernel_shape=node["kernel_size"], strides=node["stride"], pads=[p[0], p[1], p[0], p[1]],
                      ceil_mode=int(node["ceil_mode"]))
            if op == "max_pool2d":
                env[name] = b.op("MaxPool", ins, dilations=node["dilation"], **kw)
            else:
                env[name] = b.op("AveragePool", ins, count_include_pad=int(node["count_include_pad"]), **kw)
        elif op == "adaptive_avg_pool2d":
            if node["output_size"] != [1, 1]:
                raise DeployError(f"node {name}: adaptive average pooling to {node['output_size']} has no ONNX form")
            env[name] = b.op("GlobalAveragePool", ins)
        elif op == "flatten":
            if node["start_dim"] != 1 or node["end_dim"] != -1:
                raise DeployError(f"node {name}: flatten({node['start_dim']}, {node['end_dim']}) has no ONNX form")
            env[name] = b.op("Flatten", ins, axis=1)
        elif op == "add":
            env[name] = b.op("Add", ins)
        elif op == "cat":
            env[name] = b.op("Concat", ins, axis=int(node["dim"]))
        elif op == "slice":  # x[a:b:c, ...] on the leading axes
            starts, ends, axes, steps = [], [], [], []
            for axis, (start, stop, step) in enumerate(node["index"]):
                if (start, stop, step) != (None, None, None):
                    starts.append(start or 0)
                    ends.append(np.iinfo(np.int64).max if stop is None else stop)
                    axes.append(axis)
                    steps.append(step or 1)
            env[name] = b.op("Slice", [ins[0], *(b.const(f"{name}.{k}", v, np.int64) for k, v in
                                                 (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)))])
        elif op == "pad":  # F.pad's (last axis first, begin/end pairs) on an NCHW tensor
            if node["mode"] != "constant":
                raise DeployError(f"node {name}: {node['mode']} padding has no ONNX form yet")
            pairs = [node["pad"][i:i + 2] for i in range(0, len(node["pad"]), 2)]
            begin, end = [0] * 4, [0] * 4
            for k, (lo, hi) in enumerate(pairs):
                begin[3 - k], end[3 - k] = lo, hi
            env[name] = b.op("Pad", [ins[0], b.const(f"{name}.pads", begin + end, np.int64),
                                     b.const(f"{name}.value", float(node["value"] or 0.0))])
        else:
            raise DeployError(f"node {name}: op {op} has no ONNX form yet")
    graph = helper.make_graph(b.nodes, f"qbench_{manifest['method']}_{manifest['model']}",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT if image == "float" else
                                                             TensorProto.UINT8, ["N", c, h, w])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", manifest["num_classes"]])],
                              b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qbench")
    kind = "float weights (the values of the low-bit weights, for portability)" if float_weights else \
        "int8 QDQ (QuantizeLinear/DequantizeLinear)"
    helper.set_model_props(model, {"qbench.method": manifest["method"], "qbench.model": manifest["model"],
                                   "qbench.source_run": manifest["source_run"], "qbench.kind": kind,
                                   "qbench.input": ("float [0, 1]" if image == "float" else "uint8 0..255")
                                   + " NCHW; normalization is inside the graph"})
    model.ir_version = min(model.ir_version, 10)
    checker.check_model(model)
    return model
