"""The graph interpreter of a qbench export (``manifest.json`` + ``model.safetensors``)."""
from __future__ import annotations

import hashlib
import json
import operator
from pathlib import Path

import torch
import torch.nn.functional as F

from qbench.deploy import kernel
from qbench.deploy.packing import unpack_codes
from qbench.errors import UserError

FORMAT, FORMAT_VERSION = "qbench-deploy", 1
TERNARY_CODES = {0: 0.0, 1: 1.0, 3: -1.0}  # 2-bit two's complement: 00 -> 0, 01 -> +1, 11 -> -1


class DeployError(UserError):
    """An export that cannot be loaded: a bad manifest, a tensor file whose hash does not match, an op or
    weight codec this engine does not know."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(export_dir, backend: str = "auto") -> "DeployedModel":
    """Read and check an export folder. ``backend``: auto (the compiled kernels where they build) or torch."""
    from safetensors.torch import load_file

    export_dir = Path(export_dir)
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DeployError(f"{export_dir} is not a qbench export (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise DeployError(f"{manifest_path} is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise DeployError(f"{manifest_path} is format {manifest.get('format')!r} version "
                          f"{manifest.get('format_version')!r}; this engine reads {FORMAT!r} version {FORMAT_VERSION}")
    tensors_path = export_dir / manifest["tensors"]["file"]
    if not tensors_path.is_file():
        raise DeployError(f"{tensors_path} is missing (the manifest names it)")
    digest = sha256_of(tensors_path)
    if digest != manifest["tensors"]["sha256"]:
        raise DeployError(f"{tensors_path} does not match its manifest: sha256 {digest[:16]}... where the manifest "
                          f"says {manifest['tensors']['sha256'][:16]}...; re-export the run")
    return DeployedModel(manifest, load_file(str(tensors_path)), backend)


def decode_weight(spec: dict, t: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """The float weight a layer's stored codes stand for (exactly the training-time model's quantized weight)."""
    shape, codec = spec["shape"], spec["codec"]
    if codec == "float":
        return t[f"{prefix}.weight"].float().reshape(shape)
    rows, per_row = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    codes = unpack_codes(t[f"{prefix}.weight_codes"], per_row, spec["bits"])
    if codec == "binary":
        values = (2 * codes - 1).float()
    elif codec == "ternary":
        lut = torch.zeros(4)
        for c, v in TERNARY_CODES.items():
            lut[c] = v
        values = lut[codes]
    elif codec == "levels":
        values = t[f"{prefix}.levels"].float()[codes]
    else:
        raise DeployError(f"weight codec {codec!r} of {prefix} is unknown; valid: binary, ternary, levels, float")
    if f"{prefix}.alpha" in t:
        values = t[f"{prefix}.alpha"].float().reshape(rows, 1) * values
    return values.reshape(shape)


def _quantize_input(x: torch.Tensor, spec: dict) -> torch.Tensor:
    kind = spec["kind"]
    if kind == "none":
        return x
    if kind == "sign":  # x >= 0 -> +1, else -1 (BNN eq. 1)
        return torch.where(x >= 0, x.new_ones(()), x.new_full((), -1.0))
    if kind == "dorefa":  # DoReFa eq. 10: round(clip(x, 0, 1) (2^k - 1)) / (2^k - 1)
        n = float(2 ** spec["bits"] - 1)
        return torch.round(x.clamp(0, 1) * n) / n
    if kind == "wage":  # WAGE eq. 5-6: clip(round(x / s) s, -1 + s, 1 - s), s = 2^(1 - k)
        s = 2.0 ** (1 - spec["bits"])
        return torch.clamp(torch.round(x / s) * s, -1 + s, 1 - s)
    raise DeployError(f"input quantizer {kind!r} is unknown; valid: none, sign, dorefa, wage")


def _xnor_scale(x: torch.Tensor, node: dict) -> torch.Tensor:
    """XNOR-Net eq. 11: K = mean_c |I| filtered by a box of the kernel's size with the conv's geometry."""
    if node["op"] == "linear":
        return x.abs().mean(dim=-1, keepdim=True)
    a = x.abs().mean(dim=1, keepdim=True)
    kh, kw = node["kernel_size"]
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=a.dtype)
    return F.conv2d(a, box, stride=node["stride"], padding=node["padding"], dilation=node["dilation"])


class DeployedModel:
    """A callable on raw images: it normalizes as the run's data pipeline did, then runs the graph."""

    def __init__(self, manifest: dict, tensors: dict[str, torch.Tensor], backend: str = "auto"):
        if backend not in ("auto", "torch"):
            raise DeployError(f"backend={backend!r} is invalid; valid: auto, torch")
        self.manifest, self.t = manifest, tensors
        self.force_torch = backend == "torch"
        inp = manifest["input"]
        self.mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.nodes = manifest["graph"]
        self.weights: dict[str, torch.Tensor] = {}  # dequantized, for the layers that run a float operation
        self.packed: dict[str, torch.Tensor] = {}  # sign-packed words, for the xnor-popcount layers
        for node in self.nodes:
            if node["op"] in ("conv2d", "linear"):
                self._prepare(node)

    def _fast(self, node: dict) -> bool:
        """Both operands +-1 (unscaled codes, sign input): the layer runs as xnor + popcount."""
        return (node["weight"]["codec"] == "binary" and node["input_quantizer"]["kind"] == "sign"
                and node.get("groups", 1) == 1)

    def _prepare(self, node: dict) -> None:
        w = decode_weight(node["weight"], self.t, node["name"])
        if not self._fast(node):
            self.weights[node["name"]] = w
            return
        codes = unpack_codes(self.t[f"{node['name']}.weight_codes"], w[0].numel(), 1)
        signs = (2 * codes - 1).float().reshape(w.shape)  # the +-1 codes, before any alpha
        if node["op"] == "conv2d":  # words along input channels, per kernel tap: (O, kh, kw, CW)
            o, c, kh, kw = signs.shape
            self.packed[node["name"]] = kernel.pack_signs(signs.permute(0, 2, 3, 1).reshape(-1, c),
                                                          self.force_torch).reshape(o, kh, kw, -1)
        else:
            self.packed[node["name"]] = kernel.pack_signs(signs, self.force_torch)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if images.dtype == torch.uint8:
            x = x.div_(255)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(self.normalize(images))

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The graph on already normalized inputs."""
        env: dict[str, object] = {}
        for node in self.nodes:
            op = node["op"]
            args = [env[i] if isinstance(i, str) else i for i in node.get("inputs", [])]
            if op == "input":
                env[node["name"]] = x
            elif op == "output":
                return args[0]
            else:
                env[node["name"]] = self._eval(node, op, args)
        raise DeployError("the graph has no output node")

    def _layer(self, node: dict, x: torch.Tensor) -> torch.Tensor:
        name = node["name"]
        scale = _xnor_scale(x, node) if node.get("input_scale") == "xnor" else None
        bias = self.t.get(f"{name}.bias")
        if name in self.packed:
            if node["op"] == "conv2d":
                y = kernel.binary_conv2d(x, self.packed[name], x.shape[1], tuple(node["kernel_size"]),
                                         tuple(node["stride"]), tuple(node["padding"]), tuple(node["dilation"]),
                                         self.force_torch)
            else:
                y = kernel.binary_linear(kernel.pack_signs(x, self.force_torch), self.packed[name], x.shape[1],
                                         self.force_torch)
            alpha = self.t.get(f"{name}.alpha")
            if alpha is not None:
                y = y * (alpha.view(1, -1, 1, 1) if y.dim() == 4 else alpha.view(1, -1))
            if bias is not None:
                y = y + (bias.view(1, -1, 1, 1) if y.dim() == 4 else bias)
        else:
            xq = _quantize_input(x, node["input_quantizer"])
            w = self.weights[name]
            if node["op"] == "conv2d":
                y = F.conv2d(xq, w, bias, node["stride"], node["padding"], node["dilation"], node["groups"])
            else:
                y = F.linear(xq, w, bias)
        return y if scale is None else y * scale

    def _eval(self, node: dict, op: str, args: list):
        if op in ("conv2d", "linear"):
            return self._layer(node, args[0])
        if op == "batch_norm":
            p = node["name"]
            return F.batch_norm(args[0], self.t[f"{p}.running_mean"], self.t[f"{p}.running_var"],
                                self.t.get(f"{p}.weight"), self.t.get(f"{p}.bias"), False, 0.0, node["eps"])
        if op == "hardtanh":
            return F.hardtanh(args[0], node["min"], node["max"])
        if op == "relu":
            return F.relu(args[0])
        if op == "leaky_relu":
            return F.leaky_relu(args[0], node["slope"])
        if op == "identity":
            return args[0]
        if op == "max_pool2d":
            return F.max_pool2d(args[0], node["kernel_size"], node["stride"], node["padding"], node["dilation"],
                                ceil_mode=node["ceil_mode"])
        if op == "avg_pool2d":
            return F.avg_pool2d(args[0], node["kernel_size"], node["stride"], node["padding"],
                                ceil_mode=node["ceil_mode"], count_include_pad=node["count_include_pad"])
        if op == "adaptive_avg_pool2d":
            return F.adaptive_avg_pool2d(args[0], node["output_size"])
        if op == "flatten":
            return torch.flatten(args[0], node["start_dim"], node["end_dim"])
        if op == "add":
            return operator.add(args[0], args[1])
        if op == "cat":
            return torch.cat(args, node["dim"])
        if op == "slice":
            return args[0][tuple(slice(*s) if isinstance(s, list) else s for s in node["index"])]
        if op == "pad":
            return F.pad(args[0], node["pad"], node["mode"], node["value"])
        raise DeployError(f"op {op!r} of node {node['name']!r} is unknown to this engine")

    def describe(self) -> list[dict]:
        """Per conv/linear layer: which path computes it."""
        return [{"layer": n["name"], "op": n["op"], "weight": n["weight"]["codec"], "bits": n["weight"]["bits"],
                 "input": n["input_quantizer"]["kind"],
                 "path": "xnor-popcount" if n["name"] in self.packed else "dequantized float op"}
                for n in self.nodes if n["op"] in ("conv2d", "linear")]
