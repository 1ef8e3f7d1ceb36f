"""The xnor-popcount kernels: compiled C (``csrc/xnor_popcount.c``, built on first use with the C compiler a
Python user has, OpenMP across cores) or, where no compiler is present, the same arithmetic in PyTorch. Both
give the same integers, so a deployed model's outputs do not depend on which ran (tests check it).

``QBENCH_DEPLOY_KERNEL=torch`` forces the PyTorch path; ``backend()`` says which path runs.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "xnor_popcount.c"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_LIB: ctypes.CDLL | None = None
_WHY_NOT: str | None = None


def _cache_dir() -> Path:
    return Path(os.environ.get("QBENCH_KERNEL_CACHE", Path.home() / ".cache" / "qbench" / "kernels"))


def _build() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise OSError("no C compiler (gcc or cc) on PATH")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([cc, *FLAGS, sys.platform]).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"xnor_popcount-{key}.so"
    if not lib.is_file():
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=lib.parent, suffix=".so")
        os.close(fd)
        try:
            r = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
            if r.returncode:
                raise OSError(f"{cc} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            os.replace(tmp, lib)  # another process may build the same file: the rename is atomic
        finally:
            Path(tmp).unlink(missing_ok=True)
    return ctypes.CDLL(str(lib))


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built once per source and compiler; None where they cannot be built."""
    global _LIB, _WHY_NOT
    if _LIB is None and _WHY_NOT is None:
        if os.environ.get("QBENCH_DEPLOY_KERNEL") == "torch":
            _WHY_NOT = "QBENCH_DEPLOY_KERNEL=torch"
        else:
            try:
                _LIB = _build()
            except OSError as e:
                _WHY_NOT = str(e)
    return _LIB


def backend() -> str:
    """'compiled C (AVX-512 VPOPCNTQ, OpenMP, N threads)' or 'pytorch fallback (<why>)'."""
    lib = library()
    if lib is not None:
        simd = "AVX-512 VPOPCNTQ" if lib.qb_simd() else "scalar popcount"
        return f"compiled C ({simd}, OpenMP, {torch.get_num_threads()} threads)"
    return f"pytorch fallback ({_WHY_NOT})"


def _ptr(t: torch.Tensor):
    return ctypes.c_void_p(t.data_ptr())


def words(c: int) -> int:
    return (c + 63) // 64


# --- packing ----------------------------------------------------------------------------------------

_BIT_WEIGHTS = torch.tensor([1 << j for j in range(63)] + [-(1 << 63)], dtype=torch.int64)  # bit 63: the sign


def padded(cw: int) -> int:
    """Packed rows are padded with zero words to a multiple of 8 words (one 512-bit vector)."""
    return (cw + 7) // 8 * 8


def pack_signs_nchw(x: torch.Tensor, stride: int | None = None, force_torch: bool = False,
                    thresholds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(N, C, *spatial) float -> (N, prod(spatial), stride) int64 words: bit c % 64 of word c // 64 is
    x[n, c, p] >= 0; words past ceil(C / 64) are 0. ``stride`` defaults to ceil(C / 64). ``thresholds``
    (per channel t float32, up int8): the bit is x >= t where up is 1, x <= t where it is 0."""
    x = x.contiguous().float()
    n, c = x.shape[:2]
    hw = x[0, 0].numel() if x.dim() > 2 else 1
    cw = words(c)
    stride = stride or cw
    lib = None if force_torch else library()
    if lib is not None:
        out = torch.empty(n, hw, stride, dtype=torch.int64)
        t, up = (None, None) if thresholds is None else (thresholds[0].contiguous(), thresholds[1].contiguous())
        lib.qb_pack_signs_nchw(_ptr(x), *map(ctypes.c_int64, (n, c, hw, stride)), _ptr(out),
                               None if t is None else _ptr(t), None if up is None else _ptr(up),
                               ctypes.c_int(torch.get_num_threads()))
        return out
    xs = x.reshape(n, c, hw).transpose(1, 2)
    if thresholds is None:
        bits = (xs >= 0).to(torch.int64)
    else:
        t, up = thresholds
        bits = torch.where(up.bool(), xs >= t, xs <= t).to(torch.int64)
    bits = torch.nn.functional.pad(bits, (0, stride * 64 - c)).reshape(n, hw, stride, 64)
    return (bits * _BIT_WEIGHTS).sum(-1)  # two's complement wrap-around sets bit 63 exactly


def pack_signs(x: torch.Tensor, force_torch: bool = False) -> torch.Tensor:
    """(rows, K) float -> (rows, padded(ceil(K / 64))) words: a linear layer's operand."""
    return pack_signs_nchw(x, padded(words(x.shape[1])), force_torch).reshape(x.shape[0], -1)


def pack_conv_weight(signs: torch.Tensor, force_torch: bool = False) -> torch.Tensor:
    """(O, C, kh, kw) +-1 -> (O, padded(kh kw ceil(C / 64))) words: per tap, the input channels' words."""
    o, c, kh, kw = signs.shape
    per_tap = pack_signs_nchw(signs.permute(0, 2, 3, 1).reshape(o * kh * kw, c), None, force_torch)
    rows = per_tap.reshape(o, kh * kw * words(c))
    return torch.nn.functional.pad(rows, (0, padded(rows.shape[1]) - rows.shape[1]))


_POPCOUNT8 = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _popcount_words(v: torch.Tensor) -> torch.Tensor:
    """popcount of int64 words, summed over the last axis, by an 8-bit table."""
    b = v.contiguous().view(torch.uint8).reshape(*v.shape[:-1], -1)
    return _POPCOUNT8[b.long()].sum(-1)


# --- products ---------------------------------------------------------------------------------------

def binary_linear(x, w_packed: torch.Tensor, force_torch: bool = False, chunk: int = 64) -> torch.Tensor:
    """sign(x) (M, K float, or ``PackedSigns``) times +-1 weights packed by ``pack_signs`` (O, KW) -> (M, O)
    float, exactly: K - 2 popcount(x ^ w)."""
    k = x.shape[1]
    x_packed = x.words.reshape(x.shape[0], -1) if isinstance(x, PackedSigns) else pack_signs(x, force_torch)
    m, kw = x_packed.shape
    o = w_packed.shape[0]
    lib = None if force_torch else library()
    if lib is not None:
        out = torch.empty(m, o, dtype=torch.float32)
        lib.qb_binary_gemm(_ptr(x_packed), ctypes.c_int64(m), _ptr(w_packed.contiguous()), ctypes.c_int64(o),
                           ctypes.c_int64(kw), ctypes.c_int64(k), _ptr(out), ctypes.c_int(torch.get_num_threads()))
        return out
    out = torch.empty(m, o, dtype=torch.float32)
    for i in range(0, m, chunk):  # bounded memory: chunk x O x KW words at a time
        pop = _popcount_words(x_packed[i:i + chunk, None, :] ^ w_packed[None])
        out[i:i + chunk] = (k - 2 * pop).float()
    return out


def max_pool2d(x: torch.Tensor, kernel_size, stride, force_torch: bool = False) -> torch.Tensor:
    """Max pooling without padding, dilation or ceil mode, on all cores (PyTorch's own is the slowest op of a
    deployed BNN VGG-small); the very maxima PyTorch computes."""
    lib = None if force_torch else library()
    if lib is None:
        return torch.nn.functional.max_pool2d(x, kernel_size, stride)
    x = x.contiguous().float()
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = torch.empty(n, c, oh, ow, dtype=torch.float32)
    lib.qb_max_pool2d(_ptr(x), *map(ctypes.c_int64, (n * c, h, w, kh, kw, sh, sw, oh, ow)), _ptr(out),
                      ctypes.c_int(torch.get_num_threads()))
    return out


class PackedSigns:
    """An activation already reduced to its signs and packed (N, H*W, CW words), with its logical shape: what a
    folded batch norm + sign hands the next binary layer."""

    def __init__(self, words_: torch.Tensor, shape: tuple):
        self.words, self.shape = words_, tuple(shape)


def binary_conv2d(x, w_packed: torch.Tensor, kernel: tuple[int, int], stride, padding,
                  dilation, force_torch: bool = False) -> torch.Tensor:
    """The zero-padded convolution of sign(x) (N, C, H, W float, or ``PackedSigns``) with +-1 weights packed by
    ``pack_conv_weight``, exactly: a tap in the padding multiplies 0, so it leaves the popcount and K."""
    n, c, h, w = x.shape
    kh, kwid = kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kwid - 1) - 1) // sw + 1
    o, kpad, cw = w_packed.shape[0], w_packed.shape[1], words(c)
    xp = x.words if isinstance(x, PackedSigns) else pack_signs_nchw(x, None, force_torch)  # N, H*W, CW
    lib = None if force_torch else library()
    if lib is not None:
        out = torch.empty(n, o, oh, ow, dtype=torch.float32)
        lib.qb_binary_conv2d(_ptr(xp), *map(ctypes.c_int64, (n, h, w, cw, c)), _ptr(w_packed.contiguous()),
                             *map(ctypes.c_int64, (kpad, o, kh, kwid, sh, sw, ph, pw, dh, dw, oh, ow)), _ptr(out),
                             ctypes.c_int(torch.get_num_threads()))
        return out
    # the same sum in PyTorch: packed im2col with a validity mask per tap
    xpad = torch.nn.functional.pad(xp.reshape(n, h, w, cw).permute(0, 3, 1, 2), (pw, pw, ph, ph))  # 0 outside
    mpad = torch.nn.functional.pad(torch.ones(1, 1, h, w), (pw, pw, ph, ph))  # 1 inside the image
    cols, taps = [], []
    for i in range(kh):
        for j in range(kwid):
            ys, xs = i * dh, j * dw
            cols.append(xpad[:, :, ys:ys + sh * (oh - 1) + 1:sh, xs:xs + sw * (ow - 1) + 1:sw])
            taps.append(mpad[:, :, ys:ys + sh * (oh - 1) + 1:sh, xs:xs + sw * (ow - 1) + 1:sw])
    xcol = torch.stack(cols, 1).permute(0, 3, 4, 1, 2)  # N, OH, OW, taps, CW
    tmask = torch.stack(taps, 1)[0, :, 0].permute(1, 2, 0)  # OH, OW, taps: 1 where the tap is inside
    wt = w_packed[:, : kh * kwid * cw].reshape(o, kh * kwid, cw)
    out = torch.empty(n, o, oh, ow, dtype=torch.float32)
    for b in range(n):
        diff = xcol[b][:, :, None] ^ wt[None, None]  # OH, OW, O, taps, CW
        diff = torch.where(tmask[:, :, None, :, None] > 0, diff, torch.zeros((), dtype=torch.int64))
        pop = _popcount_words(diff.reshape(oh, ow, o, -1))
        k_valid = (tmask.sum(-1) * c).to(torch.int64)[:, :, None]
        out[b] = (k_valid - 2 * pop).permute(2, 0, 1).float()
    return out
