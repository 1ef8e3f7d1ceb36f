"""Batch-norm folding for quantization-aware training (whitepaper section 3.2, Figures 14-15).

At inference a conv followed by batch norm is one conv with weights W gamma / sigma and bias
beta - gamma mu / sigma, so it is the *folded* weights that must be quantized during training. Before
``freeze`` the layer computes, with the moving std sigma and the batch statistics mu_B, sigma_B:

    y = conv(x, Q(W gamma / sigma)) * (sigma / sigma_B) + (beta - gamma mu_B / sigma_B)

(the correction sigma / sigma_B keeps the quantized weights on the stable moving statistics while the
output is normalised with the batch's, exactly batch norm when Q is the identity); after freezing, and in
evaluation, y = conv(x, Q(W gamma / sigma)) + (beta - gamma mu / sigma) and the moving statistics stop.
mu_B and sigma_B carry no gradient, as in TensorFlow's fold_batch_norms over a fused batch norm (the
whitepaper's models): the fused op's gradient reads only its output's, and its batch-moment outputs get none.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from qbench.errors import UserError


class FoldedConvBN(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.conv, self.bn
        x = conv.quantize_input(x)
        sigma = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight
        w_fold = conv.weight * (gamma / sigma).view(-1, 1, 1, 1)
        w_q = conv.quantize_weight(w_fold)
        if self.training and not self.frozen:
            with torch.no_grad():  # batch statistics of the float conv output, as batch norm would see them
                y_float = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
                mu_b = y_float.mean(dim=(0, 2, 3))
                var_b = y_float.var(dim=(0, 2, 3), unbiased=False)
                n = y_float.numel() / y_float.shape[1]
                bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mu_b)
                bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var_b * n / max(n - 1, 1))
                bn.num_batches_tracked += 1
            sigma_b = torch.sqrt(var_b + bn.eps)
            y = F.conv2d(x, w_q, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            y = y * (sigma / sigma_b).view(1, -1, 1, 1) + (bn.bias - gamma * mu_b / sigma_b).view(1, -1, 1, 1)
        else:
            y = F.conv2d(x, w_q, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            y = y + (bn.bias - gamma * bn.running_mean / sigma).view(1, -1, 1, 1)
        return y if conv.output_quantizer is None else conv.output_quantizer(y)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, batch-norm name) for every BatchNorm2d whose only input is a bias-free Conv2d used once."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:  # data-dependent control flow
        raise UserError(f"batch-norm folding cannot trace this model ({type(e).__name__})") from None
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.BatchNorm2d):
            src = node.args[0]
            if (isinstance(src, fx.Node) and src.op == "call_module"
                    and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1
                    and modules[src.target].bias is None and modules[node.target].affine):
                pairs.append((src.target, node.target))
    return pairs


def fold_batch_norms(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Replace each conv -> BN pair (found by ``conv_bn_pairs`` on the float model, before quantization)
    by a FoldedConvBN at the conv's place; the BN becomes Identity."""

    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        model.set_submodule(conv_name, FoldedConvBN(conv, bn))
        model.set_submodule(bn_name, nn.Identity())
