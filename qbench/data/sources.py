"""Where each dataset's files may live, and how to read them into (uint8 NCHW images, int64 labels).

Two layouts are accepted for every dataset under the data root:
  * torchvision's own (what ``torchvision.datasets.<X>(root, download=True)`` writes), and
  * an image folder ``<root>/<name>/{train,test}/<class>/<file>`` (ImageNet: ``{train,val}``).
MNIST-family idx files are read as distributed (``.gz``) or decompressed.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qbench.checkpoint import write_atomic
from qbench.errors import UserError, choices

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}


@dataclass(frozen=True)
class Layouts:
    torchvision: str  # described for error messages
    folder: str
    download: str | None  # torchvision.datasets class name
    test_folder: str = "test"  # the folder of the test split (ImageNet's is its validation set, val)


LAYOUTS = {
    "mnist": Layouts("MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
                     "mnist/{train,test}/<class>/*.png", "MNIST"),
    "fashion_mnist": Layouts("FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
                             "fashion_mnist/{train,test}/<class>/*.png", "FashionMNIST"),
    "cifar10": Layouts("cifar-10-batches-py/{data_batch_1..5,test_batch}",
                       "cifar10/{train,test}/<class>/*.png", "CIFAR10"),
    "cifar100": Layouts("cifar-100-python/{train,test}", "cifar100/{train,test}/<class>/*.png", "CIFAR100"),
    "svhn": Layouts("svhn/{train,test,extra}_32x32.mat", "svhn/{train,test,extra}/<class>/*.png", "SVHN"),
    "imagenet": Layouts("(none: ImageNet has no torchvision download)",
                        "imagenet/{train,val}/<wnid>/*.JPEG", None, test_folder="val"),
}
IDX_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _folder_split(split: str, name: str) -> str:
    return LAYOUTS[name].test_folder if split == "test" else split


def _find_idx(raw: Path, stem: str) -> Path | None:
    for p in (raw / stem, raw / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def _torchvision_files(name: str, root: Path, split: str) -> list[Path] | None:
    """The files of ``split`` in torchvision's layout, or None if any is missing."""
    train = split == "train"
    if name in IDX_DIRS:
        raw = root / IDX_DIRS[name] / "raw"
        prefix = "train" if train else "t10k"
        files = [_find_idx(raw, f"{prefix}-images-idx3-ubyte"), _find_idx(raw, f"{prefix}-labels-idx1-ubyte")]
    elif name == "cifar10":
        d = root / "cifar-10-batches-py"
        files = [d / f"data_batch_{i}" for i in range(1, 6)] if train else [d / "test_batch"]
    elif name == "cifar100":
        files = [root / "cifar-100-python" / ("train" if train else "test")]
    elif name == "svhn":
        files = [root / "svhn" / f"{split}_32x32.mat"]
    else:
        return None
    return files if all(f is not None and f.is_file() for f in files) else None


def locate(name: str, root: str | os.PathLike, split: str = "train") -> tuple[str, object]:
    """Find ``split`` of dataset ``name`` under ``root``: ('torchvision', [files]) or ('folder', dir)."""
    if name not in LAYOUTS:
        raise UserError(f"unknown dataset {name!r}; valid: {choices(LAYOUTS)}")
    root = Path(root).expanduser()
    files = _torchvision_files(name, root, split)
    if files:
        return "torchvision", files
    folder = root / name / _folder_split(split, name)
    if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
        return "folder", folder
    lay = LAYOUTS[name]
    hint = " or set data.download=true" if lay.download else ""
    raise UserError(f"dataset {name!r} ({split}) not found under data root {str(root)!r}; expected "
                    f"<root>/{lay.torchvision} or <root>/{lay.folder} (set data.root or QBENCH_DATA{hint})")


def _download_url(cls, split: str) -> str:
    """Where torchvision's class fetches ``split`` from (for the message when it cannot)."""
    if hasattr(cls, "mirrors"):  # MNIST, FashionMNIST: a list of mirrors and of file names
        return cls.mirrors[0] + cls.resources[0][0]
    if hasattr(cls, "split_list"):  # SVHN: one .mat file per split
        return cls.split_list[split][0]
    return cls.url


def download(name: str, root: Path, split: str = "train") -> None:
    """Fetch through torchvision into its own layout under ``root``: SVHN one split at a time (its 'extra'
    split is 1.3 GB), the others both splits at once. A failed fetch removes what it wrote (an empty folder, a
    partial archive) and is one line: what, from where, and how to supply the files by hand."""
    import shutil

    import torchvision.datasets as tvd

    lay = LAYOUTS[name]
    cls = getattr(tvd, lay.download)
    owned = root / lay.torchvision.split("/")[0]  # MNIST, FashionMNIST, cifar-10-batches-py, svhn, ...
    mine = [owned, *(root / f"{owned.name}.tar.gz",) * name.startswith("cifar")]
    had_root = root.exists()
    before = {q for m in mine if m.exists() for q in (m.rglob("*") if m.is_dir() else [m])} | \
        {m for m in mine if m.exists()}
    root.mkdir(parents=True, exist_ok=True)
    try:
        if name == "svhn":
            cls(str(root / "svhn"), split=split, download=True)
        else:
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as e:  # no network, a proxy, a mirror gone, a checksum that fails
        for m in mine:  # newest first: files, then the folders they were in
            for q in sorted((m.rglob("*") if m.is_dir() else []), key=lambda q: -len(q.parts)) + [m]:
                if q.exists() and q not in before:
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
        if not had_root and not any(root.iterdir()):
            root.rmdir()
        reason = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise UserError(f"data.download=true: could not download {lay.download} from {_download_url(cls, split)} "
                        f"({reason[-1] if reason else type(e).__name__}); fetch it by hand into "
                        f"{root}/{lay.torchvision} (or PNGs into {root}/{lay.folder}), or set data.root") from None


# --- readers ---------------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def _read_torchvision(name: str, files: list[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if name in IDX_DIRS:
        images, labels = read_idx(files[0])[:, None], read_idx(files[1]).astype(np.int64)
        return images, labels, [str(i) for i in range(10)]
    if name in ("cifar10", "cifar100"):
        xs, ys = [], []
        for f in files:
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels" if name == "cifar10" else "fine_labels"], dtype=np.int64))
        meta = files[0].parent / ("batches.meta" if name == "cifar10" else "meta")
        key = "label_names" if name == "cifar10" else "fine_label_names"
        classes = [str(i) for i in range(10 if name == "cifar10" else 100)]
        if meta.is_file():
            with open(meta, "rb") as fh:
                classes = pickle.load(fh, encoding="latin1")[key]
        return np.concatenate(xs), np.concatenate(ys), classes
    if name == "svhn":
        from scipy.io import loadmat

        m = loadmat(str(files[0]))
        labels = m["y"].astype(np.int64).ravel()
        labels[labels == 10] = 0  # SVHN stores digit 0 as class 10 (torchvision does the same remap)
        return np.transpose(m["X"], (3, 2, 0, 1)).copy(), labels, [str(i) for i in range(10)]
    raise AssertionError(name)


def image_folder_files(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((folder / c).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(i)
    return files, labels, classes


def _read_folder(folder: Path, channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    files, labels, classes = image_folder_files(folder)
    if not files:
        raise UserError(f"image folder {folder} has class folders but no images ({', '.join(IMAGE_SUFFIXES)})")
    mode = "L" if channels == 1 else "RGB"
    first = None
    out = None
    for i, f in enumerate(files):
        with Image.open(f) as im:
            a = np.asarray(im.convert(mode))
        if first is None:
            first = a.shape
            out = np.empty((len(files), channels, a.shape[0], a.shape[1]), dtype=np.uint8)
        if a.shape != first:
            raise UserError(f"{f} is {a.shape[1]}x{a.shape[0]}, other images are {first[1]}x{first[0]}: "
                            "small datasets need images of one size")
        out[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return out, np.asarray(labels, dtype=np.int64), classes


# --- cache -----------------------------------------------------------------------------------------

def _fingerprint(kind: str, where) -> str:
    h = hashlib.sha1(kind.encode())
    paths = where if kind == "torchvision" else [p for p in sorted(Path(where).rglob("*")) if p.is_file()]
    for p in paths:
        st = os.stat(p)
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return h.hexdigest()


def _cache_path(name: str, root: Path, split: str) -> Path:
    """Next to the data if that folder is writable, else under ~/.cache/qbench (e.g. a read-only share)."""
    local = root / ".qbench-cache"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local / f"{name}-{split}.pt"
    except OSError:
        pass
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qbench" / "tensors" / key
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}-{split}.pt"


def load_split(name: str, root: str | os.PathLike, split: str, channels: int,
               allow_download: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images uint8 [N, C, H, W], labels int64 [N], class names) of a small dataset, cached."""
    root = Path(root).expanduser()
    try:
        kind, where = locate(name, root, split)
    except UserError:
        if not (allow_download and LAYOUTS[name].download):
            raise
        download(name, root, split)
        kind, where = locate(name, root, split)
    fp = _fingerprint(kind, where)
    cache = _cache_path(name, root, split)
    if cache.is_file():
        try:
            c = torch.load(cache, weights_only=True)
            if c.get("fingerprint") == fp:
                return c["images"], c["labels"], list(c["classes"])
        except Exception:  # a stale or broken cache is rebuilt, never trusted
            pass
    if kind == "torchvision":
        images, labels, classes = _read_torchvision(name, where)
    else:
        images, labels, classes = _read_folder(where, channels)
    images, labels = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
    write_atomic(cache, lambda f: torch.save({"fingerprint": fp, "images": images, "labels": labels,
                                              "classes": list(classes)}, f))
    return images, labels, list(classes)
