"""Two-Step Quantization (Wang et al., CVPR 2018) as a schedule of two stages.

Step 1, code learning: the network trains with float weights and sparse k-bit HWGQ activations
(``qbench.quant.hwgq`` with ``method.sparsity``; every layer's input but the data's).
Step 2, transformation function learning, at the start of the second stage and without gradients: layer by
layer from the input, each quantized layer's ternary (or binary) weights and per-channel scales are solved
on ``method.calib_batches`` training batches, fed with the inputs of the network quantized so far:
  1. by linear least squares (``qbench.quant.tsq_least_squares``) against what the step-1 network's layer
     computes there;
  2. where the layer's output reaches the next layer's HWGQ quantizer through nothing but its batch norm, a
     ReLU, max-pooling, dropout or a flatten (consecutive modules of one nn.Sequential), by the paper's
     objective || y - Q(alpha X w) ||^2 against the step-1 codes y, with the auxiliary-variable iteration
     (``qbench.quant.tsq_auxiliary``; batch norm in eval mode is the per-channel affine map in between). On a
     subsample of ``method.ls_rows`` rows. Elsewhere (a residual addition in between) the linear solution is
     kept.
Then the quantized network is fine-tuned for the rest of the run.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from qbench.data.loader import calibration_batches
from qbench.methods.callbacks import layers_quantized_by
from qbench.methods.stages import StagedSchedule
from qbench.nn.layers import _QuantizedMixin
from qbench.nn.partial import Gated
from qbench.quant.halfwave import hwgq, hwgq_bins
from qbench.quant.two_step import LEVELS, tsq_auxiliary, tsq_init, tsq_least_squares, tsq_objective

MAX_ELEMENTS = 1 << 24  # rows x n per block while accumulating X^T X


class _Captured(Exception):
    pass


def tsq_layers(model: nn.Module):
    return list(layers_quantized_by(model, Gated))


def _rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of its linear map: im2col patches for a conv, the input for a linear."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


_ON_THE_WAY = (nn.ReLU, nn.Identity, nn.MaxPool2d, nn.Dropout, nn.Flatten)


def code_path(model: nn.Module, name: str):
    """(batch norm or None, the next layer's HWGQ quantizer) if layer ``name``'s output reaches that quantizer
    through only its batch norm and monotone or shape-only modules, consecutive in one nn.Sequential (so
    Q(next input) is Q applied to BN(output) position by position, up to max-pooling); else None."""
    parent_name, _, _ = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    items = list(parent._modules.values())
    layer = model.get_submodule(name)
    j = next(i for i, m in enumerate(items) if m is layer) + 1
    bn = None
    if j < len(items) and isinstance(items[j], (nn.BatchNorm1d, nn.BatchNorm2d)):
        bn, j = items[j], j + 1
    while j < len(items) and isinstance(items[j], _ON_THE_WAY):
        j += 1
    nxt = items[j] if j < len(items) else None
    q = getattr(nxt, "input_quantizer", None) if isinstance(nxt, _QuantizedMixin) else None
    if getattr(q, "func", None) is hwgq and q.keywords.get("k", 2) != 32:  # 32 bits: no Q, (a) is exact
        return bn, q
    return None


def _affine(layer: nn.Module, bn) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) per output channel with BN(layer(x)) = a * (W x) + b in eval mode (the layer's bias folded in)."""
    c = layer.weight.shape[0]
    a = torch.ones(c, dtype=torch.float64, device=layer.weight.device)
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(a)
    if bn is not None:
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        a, b = scale, scale * (b - bn.running_mean.double()) + bn.bias.double()
    return a, b


@torch.no_grad()
def layer_inputs(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """What layer ``name`` multiplies by its weight for input batch ``x``: its input after its own input
    quantizer. The forward pass stops at that layer."""
    layer = model.get_submodule(name)
    seen = {}

    def hook(module, args):
        inp = args[0]
        seen["x"] = module.quantize_input(inp)
        raise _Captured

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen["x"]


class TwoStepQuantization(StagedSchedule):
    def __init__(self, epochs: int, levels: str = "ternary", calib_batches: int = 10, iters: int = 5,
                 stage_mode: str = "restart", rows: int = 20000, lam: float = 1.0):
        if levels not in LEVELS:
            raise ValueError(f"method.w_levels={levels!r} is invalid; valid: {', '.join(LEVELS)}")
        for key, v in (("calib_batches", calib_batches), ("ls_iters", iters), ("ls_rows", rows)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"method.{key}={v!r} is invalid; allowed: an integer >= 1")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
            raise ValueError(f"method.ls_lambda={lam!r} is invalid; allowed: a number > 0")
        super().__init__(epochs, 2, stage_mode, what="TSQ steps (code learning, then fine-tuning)")
        self.levels, self.calib_batches, self.iters, self.rows, self.lam = levels, calib_batches, iters, rows, lam
        self.done = False  # step 2 has run: the weights are quantized from here on
        self.residual = None  # mean over layers of ||Y - alpha X w||^2 / ||Y||^2 after step 2
        self.code_error = None  # mean over layers solved with Q of ||y - Q(.)||^2 / ||y||^2 after step 2

    def _gate(self, model: nn.Module) -> None:
        for _, m in tsq_layers(model):
            m.weight_quantizer.enabled = self.done

    def on_train_start(self, trainer) -> None:
        self._gate(trainer.model)

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if self.stage(epoch) == 1 and not self.done:
            self.step2(trainer.model, calibration_batches(trainer.data.train, self.calib_batches))
        self._gate(trainer.model)

    @torch.no_grad()
    def step2(self, model: nn.Module, batches: list[torch.Tensor]) -> dict[str, float]:
        """Solve every quantized layer's weights from the input up; returns each layer's relative residual."""
        was_training = model.training
        teacher = copy.deepcopy(model).eval()  # the step-1 network: float weights, quantized activations
        model.eval()
        residuals, code_errors = {}, {}
        for name, layer in tsq_layers(model):
            if getattr(layer, "groups", 1) != 1:  # grouped convs keep the TWN / sign start
                layer.weight_quantizer.enabled = True
                continue
            w = layer.weight
            target_w = teacher.get_submodule(name).weight.flatten(1).double()
            n, c = w[0].numel(), w.shape[0]
            gram = torch.zeros(n, n, dtype=torch.float64, device=w.device)
            cross = torch.zeros(n, c, dtype=torch.float64, device=w.device)
            yy = torch.zeros(c, dtype=torch.float64, device=w.device)
            for x in batches:
                student = _rows(layer, layer_inputs(model, name, x))
                source = _rows(layer, layer_inputs(teacher, name, x))
                step = max(1, MAX_ELEMENTS // n)
                for i in range(0, len(student), step):
                    xs, xt = student[i:i + step].double(), source[i:i + step].double()
                    y = xt @ target_w.T
                    gram += xs.T @ xs
                    cross += xs.T @ y
                    yy += (y * y).sum(0)
            codes, alpha = tsq_init(w, self.levels)
            codes, alpha = tsq_least_squares(gram, cross, codes.double(), alpha.double(), self.levels, self.iters)
            err = tsq_objective(gram, cross, codes, alpha) + yy
            residuals[name] = float((err.sum() / yy.sum().clamp_min(1e-30)).clamp_min(0))
            path = code_path(model, name)
            if path is not None:
                codes, alpha, code_errors[name] = self._with_quantizer(model, teacher, name, layer, path, batches,
                                                                       codes, alpha, target_w)
            w.copy_((codes * alpha).T.reshape_as(w).to(w.dtype))
            layer.weight_quantizer.enabled = True  # the layers above now see this layer quantized
        model.train(was_training)
        self.done = True
        self.residual = sum(residuals.values()) / max(1, len(residuals))
        if code_errors:
            self.code_error = sum(e for _, e in code_errors.values()) / len(code_errors)
        self.code_errors = code_errors
        return residuals

    def _with_quantizer(self, model, teacher, name, layer, path, batches, codes, alpha, target_w):
        """The paper's || y - Q(a (alpha X w) + b) ||^2 by the auxiliary-variable iteration, from the linear
        solution; returns (codes, alpha, (code error before, after)), errors relative to ||y||^2."""
        bn, q = path
        values, thresholds = hwgq_bins(q.keywords.get("k", 2), q.keywords.get("sparsity", 0.5))
        a, b = _affine(layer, bn)
        g = torch.Generator().manual_seed(0)
        xs, ys = [], []
        per_batch = max(1, self.rows // len(batches))
        for x in batches:
            student = _rows(layer, layer_inputs(model, name, x))
            source = _rows(layer, layer_inputs(teacher, name, x))
            pick = torch.randperm(len(student), generator=g)[:per_batch].to(student.device)
            xs.append(student[pick].double())
            ys.append(source[pick].double() @ target_w.T)
        x, pre = torch.cat(xs), torch.cat(ys)
        code = hwgq(a * pre + b, q.keywords.get("k", 2), q.keywords.get("sparsity", 0.5))  # step 1's codes y
        gram = x.T @ x

        def code_error(codes, alpha):
            v = a * ((x @ codes) * alpha) + b
            return float(((code - hwgq(v, q.keywords.get("k", 2), q.keywords.get("sparsity", 0.5))) ** 2).sum()
                         / (code ** 2).sum().clamp_min(1e-30))

        before = best = code_error(codes, alpha)
        best_codes, best_alpha = codes, alpha
        safe_a = torch.where(a.abs() > 1e-12, a, torch.full_like(a, 1e-12))
        for _ in range(self.iters):
            z = tsq_auxiliary(code, a * ((x @ codes) * alpha) + b, values, thresholds, self.lam)
            target = (z - b) / safe_a  # what alpha X w should be: BN's affine map undone
            codes, alpha = tsq_least_squares(gram, x.T @ target, codes, alpha, self.levels, iters=1)
            err = code_error(codes, alpha)
            if err < best:  # the iteration lowers the joint objective; the code error itself is kept monotone
                best, best_codes, best_alpha = err, codes, alpha
        return best_codes, best_alpha, (before, best)

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        out = {"tsq_step": 2.0 if self.done else 1.0}
        if self.residual is not None:
            out["tsq_relative_residual"] = self.residual
        if self.code_error is not None:
            out["tsq_code_error"] = self.code_error
        return out

    def state_dict(self) -> dict:
        return {"done": self.done, "residual": self.residual, "code_error": self.code_error}

    def load_state_dict(self, state: dict) -> None:
        self.done, self.residual = bool(state.get("done", False)), state.get("residual")
        self.code_error = state.get("code_error")
