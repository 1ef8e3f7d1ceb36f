"""How far a deployed model is from its training-time model, beside how far the training-time model is from
itself under another of PyTorch's convolution backends (oneDNN on / off), on the same random images.

    python scripts/deploy_spread.py <run dir with export> [--images 64] [--seed 0]

XNOR-Net's nets binarize real-valued batch-norm outputs, so a rounding difference of 1e-7 in a value near 0
flips a sign; the second figure says how much of that the training-time model shows on its own.
"""
import argparse
from pathlib import Path

import torch

from qbench.deploy import load
from qbench.export import rebuild


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    deployed = load(a.run / "export")
    _, _, ref = rebuild(a.run)
    c, h, w = deployed.manifest["input"]["shape"]
    x = torch.randint(0, 256, (a.images, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(a.seed))
    xn = deployed.normalize(x)
    with torch.no_grad():
        on = ref(xn)
        with torch.backends.mkldnn.flags(enabled=False):
            off = ref(xn)
    d = deployed(x)
    for label, other in (("deployed", d), ("training-time model, oneDNN off", off)):
        print(f"{label:<32} vs training-time model (oneDNN on): largest logit difference "
              f"{(other - on).abs().max().item():.3g}, same class {(other.argmax(1) == on.argmax(1)).sum().item()}/{a.images}")


if __name__ == "__main__":
    main()
