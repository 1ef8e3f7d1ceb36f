"""The layer policy: the one place that decides which layers of a model are quantized, and how.

Every nn.Conv2d / nn.Linear of the model, in definition order, becomes a QConv2d / QLinear with the
method's weight and input quantizers, except:
  * the first layer's *input* is the data itself and is not quantized, unless ``quantize_data_input``
    (WAGE regards the input image as activations and quantizes it with Q_A, section 4.1);
  * ``keep_first_fp`` / ``keep_last_fp`` keep the whole first / last layer full precision (XNOR-Net,
    DoReFa); BNN binarizes both (its first layer sees real-valued pixels, its last layer's output goes to
    batch norm and the loss un-binarized);
  * a layer the model marks ``qbench_keep_fp = True`` (e.g. a full-precision shortcut) stays float;
  * ``output_quantizer_last_only`` puts the output quantizer on the last layer alone (WAGE quantizes a hidden
    layer's error behind its next layer's Q_A, and the network output's error by itself).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from qbench.nn.layers import QConv2d, QLinear, describe_quantizer


@dataclass
class LayerRow:
    name: str
    kind: str
    shape: tuple
    params: int
    weight: str
    input: str
    output: str = "fp"


def _own_copy(q):
    """A quantizer with state (an nn.Module, e.g. FakeQuant's observed range) gets one copy per layer."""
    return copy.deepcopy(q) if isinstance(q, nn.Module) else q


def apply_layer_policy(model: nn.Module, weight_quantizer, input_quantizer,
                       keep_first_fp: bool, keep_last_fp: bool, output_quantizer=None,
                       input_scale=None, quantize_data_input: bool = False,
                       output_quantizer_last_only: bool = False) -> list[LayerRow]:
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    rows = []
    for i, (name, layer) in enumerate(layers):
        first, last = i == 0, i == len(layers) - 1
        fp = getattr(layer, "qbench_keep_fp", False) or (first and keep_first_fp) or (last and keep_last_fp)
        wq = None if fp else weight_quantizer
        iq = None if (fp or (first and not quantize_data_input)) else input_quantizer
        oq = None if fp or (output_quantizer_last_only and not last) else output_quantizer
        scale = input_scale if iq is not None else None  # XNOR's K goes with binarized inputs
        qcls = QConv2d if isinstance(layer, nn.Conv2d) else QLinear
        wq, iq, oq = (_own_copy(q) for q in (wq, iq, oq))
        model.set_submodule(name, qcls.from_float(layer, wq, iq, oq, scale))
        rows.append(LayerRow(name, qcls.__name__, tuple(layer.weight.shape), layer.weight.numel(),
                             describe_quantizer(wq), describe_quantizer(iq) + (" x K" if scale else ""),
                             describe_quantizer(oq)))
    return rows


def dropout_after_quantizer(model: nn.Module) -> list[str]:
    """A quantized activation is the nonlinearity, and dropout follows the nonlinearity: BNN's Theano MLP is
    dense -> BN -> binary_tanh -> dropout -> dense, so a dropped unit reaches the next layer as 0 and a kept
    one as +-1/(1-p). qbench's models put ``nn.Dropout`` before the next layer, whose input quantizer would
    then binarize the dropped zeros to +1. In every ``nn.Sequential``, a dropout directly before a layer with
    an input quantizer is therefore moved into that layer, after its quantizer; an ``nn.Identity`` keeps its
    place, so module names and checkpoints are unchanged. Returns the names of the layers that took one."""
    moved = []
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = list(seq._modules.items())
        for (name, drop), (_, layer) in zip(items, items[1:]):
            if (isinstance(drop, nn.Dropout) and isinstance(layer, (QConv2d, QLinear))
                    and layer.input_quantizer is not None):
                layer.input_dropout = drop
                seq._modules[name] = nn.Identity()
                moved.append(next(n for n, m in model.named_modules() if m is layer))
    return moved


BLOCK_ORDERS = ("model", "xnor")
_ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Hardtanh, nn.Identity)


def xnor_block_order(model: nn.Module) -> list[str]:
    """XNOR-Net sec. 3.3 / Table 3b: a binary block is BN -> BinActiv -> BinConv -> Pool, the pool right after
    the binary convolution (pooling binarized activations loses information). In every ``nn.Sequential`` of
    the model, a max or average pool that follows a binary-input conv through its batch norm and activation
    (conv -> BN -> act -> pool) is moved to directly after the conv (conv -> pool -> BN -> act); nets already
    in that order (vgg_small) are unchanged. Module names are kept, so checkpoints and ``method.init`` runs
    still load. Returns the names of the convs whose pool was moved."""
    moved = []
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = list(seq._modules.items())
        i = 0
        while i < len(items):
            layer = items[i][1]
            if isinstance(layer, QConv2d) and layer.input_quantizer is not None:
                j = i + 1
                while j < len(items) and isinstance(items[j][1], _ELEMENTWISE):
                    j += 1
                if j > i + 1 and j < len(items) and isinstance(items[j][1], (nn.MaxPool2d, nn.AvgPool2d)):
                    items.insert(i + 1, items.pop(j))
                    moved.append(next(n for n, m in model.named_modules() if m is layer))
            i += 1
        seq._modules = OrderedDict(items)
    return moved
