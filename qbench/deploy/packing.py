"""k-bit codes packed into bytes, the layout of a qbench export (``FORMAT.md`` in this folder says it in words).

Each output row (an output channel of a conv, an output unit of a linear layer) is its weight's elements in
PyTorch's order (``weight[o].flatten()``: input channel, then kernel row, then kernel column), one k-bit code
per element, written as a little-endian bit stream: element i takes bits k*i .. k*i+k-1, bit j of the stream
is bit j % 8 of byte j // 8 (least significant bit first, NumPy's ``packbits(bitorder="little")``). Each row
starts on a byte boundary; the last byte of a row is padded with zero bits.
"""
from __future__ import annotations

import torch


def packed_row_bytes(elements: int, bits: int) -> int:
    return (elements * bits + 7) // 8


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, elements) integer codes in [0, 2^bits) -> (rows, packed_row_bytes) uint8."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    codes = codes.to(torch.int64)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2 ** bits):
        raise ValueError(f"codes must lie in [0, {2 ** bits}) for {bits} bits")
    rows, n = codes.shape
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((codes[:, :, None] >> shifts) & 1).reshape(rows, n * bits)  # bit b of element i at k*i + b
    width = packed_row_bytes(n, bits) * 8
    stream = torch.nn.functional.pad(stream, (0, width - n * bits)).reshape(rows, -1, 8)
    return (stream << torch.arange(8, dtype=torch.int64)).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, elements: int, bits: int) -> torch.Tensor:
    """The inverse of ``pack_codes``: (rows, bytes) uint8 -> (rows, elements) int64 codes."""
    rows = packed.shape[0]
    stream = ((packed.to(torch.int64)[:, :, None] >> torch.arange(8, dtype=torch.int64)) & 1).reshape(rows, -1)
    stream = stream[:, : elements * bits].reshape(rows, elements, bits)
    return (stream << torch.arange(bits, dtype=torch.int64)).sum(-1)
