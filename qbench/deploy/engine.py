"""The graph interpreter of a qbench export (``manifest.json`` + ``model.safetensors``)."""
from __future__ import annotations

import hashlib
import json
import math
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


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise DeployError("qbench's deploy files need safetensors: pip install 'qbench[deploy]'") from None
    return safetensors.torch


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(export_dir, backend: str = "auto") -> "DeployedModel":
    """Read and check an export folder. ``backend``: auto (the compiled kernels where they build) or torch."""
    load_file = _safetensors().load_file

    export_dir = Path(export_dir)
    manifest, tensors_path = read_manifest(export_dir, (FORMAT,))
    return DeployedModel(manifest, load_file(str(tensors_path)), backend)


def read_manifest(export_dir: Path, formats: tuple[str, ...] = (FORMAT, "qbench-onnx")) -> tuple[dict, Path]:
    """An export's manifest and its tensor file, checked: valid JSON, a known format, the file's SHA-256."""
    manifest_path = Path(export_dir) / "manifest.json"
    if not manifest_path.is_file():
        raise DeployError(f"{export_dir} is not a qbench export (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        fmt, version, tensors = manifest.get("format"), manifest.get("format_version"), manifest["tensors"]
        file, expected = tensors["file"], tensors["sha256"]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise DeployError(f"{manifest_path} is not a qbench manifest ({type(e).__name__}: {e})") from None
    if fmt not in formats or version != FORMAT_VERSION:
        raise DeployError(f"{manifest_path} is format {fmt!r} version {version!r}; valid here: "
                          f"{', '.join(formats)} version {FORMAT_VERSION}")
    tensors_path = Path(export_dir) / file
    if not tensors_path.is_file():
        raise DeployError(f"{tensors_path} is missing (the manifest names it)")
    digest = sha256_of(tensors_path)
    if digest != expected:
        raise DeployError(f"{tensors_path} does not match its manifest: sha256 {digest[:16]}... where the manifest "
                          f"says {str(expected)[:16]}...; re-export the run")
    return manifest, tensors_path


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
    elif codec == "affine":  # whitepaper eq. 3: (q - z) * s, q the stored code + qmin
        s, z = t[f"{prefix}.scale"].float(), t[f"{prefix}.zero_point"].float()
        if spec.get("per_channel"):
            s, z = s.view(rows, 1), z.view(rows, 1)
        return ((codes.float() + spec["qmin"] - z) * s).reshape(shape)
    else:
        raise DeployError(f"weight codec {codec!r} of {prefix} is unknown; valid: binary, ternary, levels, affine, "
                          "float")
    if f"{prefix}.alpha" in t:
        values = t[f"{prefix}.alpha"].float().reshape(rows, 1) * values
    return values.reshape(shape)


def _quantize_input(x: torch.Tensor, spec: dict, t: dict, name: str) -> torch.Tensor:
    kind = spec["kind"]
    if kind == "none":
        return x
    if kind == "affine":  # whitepaper eq. 1-3, as torch.fake_quantize_per_tensor_affine computes it
        s, z = t[f"{name}.input_scale"], t[f"{name}.input_zero_point"]
        return ((torch.round(x * (1.0 / s)) + z).clamp(spec["qmin"], spec["qmax"]) - z) * s
    if kind == "sign":  # x >= 0 -> +1, else -1 (BNN eq. 1)
        return torch.where(x >= 0, x.new_ones(()), x.new_full((), -1.0))
    if kind == "dorefa":  # DoReFa eq. 10: round(clip(x, 0, 1) (2^k - 1)) / (2^k - 1)
        n = float(2 ** spec["bits"] - 1)
        return torch.round(x.clamp(0, 1) * n) / n
    if kind == "wage":  # WAGE eq. 5-6: clip(round(x / s) s, -1 + s, 1 - s), s = 2^(1 - k)
        s = 2.0 ** (1 - spec["bits"])
        return torch.clamp(torch.round(x / s) * s, -1 + s, 1 - s)
    raise DeployError(f"input quantizer {kind!r} is unknown; valid: none, sign, dorefa, wage, affine")


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
        self.by_name = {n["name"]: n for n in self.nodes}
        self.users: dict[str, list[dict]] = {}
        for n in self.nodes:
            for i in n.get("inputs", []):
                self.users.setdefault(i, []).append(n)
        self.folded: dict[str, tuple] = {}  # batch norm -> (thresholds, up, words per row), see _fold
        self.passing: set[str] = set()  # the sign-preserving nodes between a folded batch norm and its users
        self.near_ties = 0
        for n in self.nodes:
            if n["op"] == "batch_norm":
                self._fold(n)

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
        if node["op"] == "conv2d":  # words along input channels, per kernel tap
            self.packed[node["name"]] = kernel.pack_conv_weight(signs, self.force_torch)
        else:
            self.packed[node["name"]] = kernel.pack_signs(signs, self.force_torch)

    # --- batch norm + sign, folded into an integer threshold ---------------------------------------------

    def _integer_source(self, node: dict) -> int | None:
        """The largest |value| of a node's integer-valued output (an unscaled xnor-popcount layer, perhaps
        max-pooled), or None if its values need not be integers."""
        while node["op"] == "max_pool2d":
            node = self.by_name[node["inputs"][0]]
        p = node["name"]
        if (p in self.packed and f"{p}.alpha" not in self.t and f"{p}.bias" not in self.t
                and node.get("input_scale") is None):
            return math.prod(node["weight"]["shape"][1:])
        return None

    def _sign_users(self, name: str, seen: list[str]) -> list[dict] | None:
        """The binary layers that read only the sign of ``name``'s output (through sign-preserving hardtanh /
        identity nodes, collected in ``seen``); None if anything else reads it."""
        out = []
        for u in self.users.get(name, []):
            if u["op"] == "identity" or (u["op"] == "hardtanh" and u["min"] < 0 < u["max"]):
                more = self._sign_users(u["name"], seen)
                if more is None:
                    return None
                seen.append(u["name"])
                out += more
            elif u["name"] in self.packed and u.get("input_scale") is None:
                out.append(u)
            else:
                return None
        return out

    def _fold(self, bn: dict) -> None:
        """sign(BN(y)) for integer y in [-K, K] is y >= t (gamma > 0) or y <= t (gamma < 0) for an integer t, from
        the exact real root of (y - mean) / sqrt(var + eps) * gamma + beta. Where the root lies so close to an
        integer y0 that float32 rounding could decide BN(y0)'s sign either way (within 1e-6 of the terms' size,
        some 8 units in the last place), y0's bit is what PyTorch's own batch norm gives y0 in a tensor of the
        real input's shape (the rounding of each element depends on where it falls in the vector loop, which
        the batch index does not change): resolved at the first input of each shape, in ``_thresholds``."""
        k = self._integer_source(self.by_name[bn["inputs"][0]])
        passing: list[str] = []
        users = self._sign_users(bn["name"], passing) if k is not None else None
        if not users or len({u["op"] for u in users}) != 1:
            return
        p = bn["name"]
        mean, var = self.t[f"{p}.running_mean"].double(), self.t[f"{p}.running_var"].double()
        c = len(mean)
        gamma = self.t[f"{p}.weight"].double() if f"{p}.weight" in self.t else torch.ones(c, dtype=torch.float64)
        beta = self.t[f"{p}.bias"].double() if f"{p}.bias" in self.t else torch.zeros(c, dtype=torch.float64)
        s = torch.sqrt(var + bn["eps"])
        safe = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
        root = mean - beta * s / safe  # BN(y) = 0 here
        near = torch.round(root)
        value = (near - mean) / s * gamma + beta
        size = (near.abs() + mean.abs()) / s * gamma.abs() + beta.abs()
        tie = (gamma != 0) & (root.abs() <= k + 1) & (value.abs() <= 1e-6 * size)
        up = (gamma > 0) | ((gamma == 0) & (beta >= 0))
        t = torch.where(gamma > 0, torch.ceil(root), torch.floor(root))
        t = torch.where(gamma == 0, torch.where(beta >= 0, torch.full_like(t, -1e30), torch.full_like(t, 1e30)), t)
        words = kernel.words(c)
        stride = kernel.padded(words) if users[0]["op"] == "linear" else words
        ties = tie.nonzero().flatten()
        self.near_ties += len(ties)
        self.folded[p] = {"t": t.clamp(-1e30, 1e30), "up": up.to(torch.int8), "stride": stride,
                          "ties": ties, "tie_values": near[ties], "by_shape": {}}
        self.passing.update(passing)

    def _thresholds(self, bn: dict, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded thresholds for inputs of this shape (ties resolved by PyTorch's batch norm itself)."""
        f = self.folded[bn["name"]]
        key = tuple(shape[1:])
        if key not in f["by_shape"]:
            t = f["t"].clone()
            if len(f["ties"]):
                p, c = bn["name"], len(t)
                probe = torch.zeros(1, c, *key[1:])
                probe[0, f["ties"]] = f["tie_values"].float().view(-1, *([1] * (len(key) - 1)))
                out = F.batch_norm(probe, self.t[f"{p}.running_mean"], self.t[f"{p}.running_var"],
                                   self.t.get(f"{p}.weight"), self.t.get(f"{p}.bias"), False, 0.0, bn["eps"])
                bit = out[0, f["ties"]].reshape(len(f["ties"]), -1)[:, 0] >= 0  # the sign BNN's sign takes
                y0, rising = f["tie_values"], f["up"][f["ties"]].bool()
                # rising: y >= t, so y0 in iff t <= y0; falling: y <= t, so y0 in iff t >= y0
                t[f["ties"]] = torch.where(rising, torch.where(bit, y0, y0 + 1), torch.where(bit, y0, y0 - 1))
            f["by_shape"][key] = (t.float(), f["up"])
        return f["by_shape"][key]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """As the data pipeline did in training: uint8 / 255 (float images are taken as [0, 1]), then mean, std."""
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
        scale = _xnor_scale(x, node) if node.get("input_scale") == "xnor" else None  # never on PackedSigns
        bias = self.t.get(f"{name}.bias")
        if name in self.packed:
            if node["op"] == "conv2d":
                y = kernel.binary_conv2d(x, self.packed[name], tuple(node["kernel_size"]), tuple(node["stride"]),
                                         tuple(node["padding"]), tuple(node["dilation"]), self.force_torch)
            else:
                y = kernel.binary_linear(x, self.packed[name], self.force_torch)
            alpha = self.t.get(f"{name}.alpha")
            if alpha is not None:
                y = y * (alpha.view(1, -1, 1, 1) if y.dim() == 4 else alpha.view(1, -1))
            if bias is not None:
                y = y + (bias.view(1, -1, 1, 1) if y.dim() == 4 else bias)
        else:
            xq = _quantize_input(x, node["input_quantizer"], self.t, name)
            w = self.weights[name]
            after = node.get("bias_after")  # QAT's folded batch norm: added after the product, as trained
            b = None if after else bias
            if node["op"] == "conv2d":
                y = F.conv2d(xq, w, b, node["stride"], node["padding"], node["dilation"], node["groups"])
            else:
                y = F.linear(xq, w, b)
            if after and bias is not None:
                y = y + bias.view(1, -1, 1, 1)
        return y if scale is None else y * scale

    def _eval(self, node: dict, op: str, args: list):
        if op in ("conv2d", "linear"):
            return self._layer(node, args[0])
        if node["name"] in self.folded:  # batch norm + sign: the next layers' packed operand, from thresholds
            x = args[0]
            thresholds = self._thresholds(node, tuple(x.shape))
            words = kernel.pack_signs_nchw(x, self.folded[node["name"]]["stride"], self.force_torch, thresholds)
            return kernel.PackedSigns(words, x.shape)
        if node["name"] in self.passing:  # hardtanh / identity keep the sign that is all the next layer reads
            return args[0]
        if op == "max_pool2d" and node["padding"] == [0, 0] and node["dilation"] == [1, 1] and not node["ceil_mode"]:
            return kernel.max_pool2d(args[0], node["kernel_size"], node["stride"], self.force_torch)
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
        folded_into = {u["name"] for b in self.folded for u in self._sign_users(b, [])}
        return [{"layer": n["name"], "op": n["op"], "weight": n["weight"]["codec"], "bits": n["weight"]["bits"],
                 "input": n["input_quantizer"]["kind"],
                 "path": ("xnor-popcount" + (" (input: batch norm + sign folded to integer thresholds)"
                                             if n["name"] in folded_into else "")
                          if n["name"] in self.packed else "dequantized float op")}
                for n in self.nodes if n["op"] in ("conv2d", "linear")]
