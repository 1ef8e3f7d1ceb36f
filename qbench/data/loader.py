"""Batches for training and evaluation.

Small datasets (all but ImageNet) live on the training device as one uint8 tensor; a batch is an index
into it, converted, augmented and normalised there (airbench's approach: no DataLoader, no per-image
Python). ImageNet streams from disk through a DataLoader with workers.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from qbench.data.augment import random_crop, random_hflip
from qbench.data.sources import load_split, locate
from qbench.data import preprocess
from qbench.errors import UserError


def default_root() -> str:
    return os.environ.get("QBENCH_DATA") or str(Path.home() / ".cache" / "qbench" / "data")


def fixed_subset(n_total: int, n: int | None) -> torch.Tensor | None:
    """The first ``n`` examples of a fixed shuffle of the split (the same on every machine and for every
    seed), so that a subset holds every class in about its usual share."""
    if n is None or n >= n_total:
        return None
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(0))[:n]


class TensorLoader:
    """Batches of an image tensor held on ``device``: uint8 (scaled to [0, 1], then normalised by mean / std) or
    already preprocessed float (``qbench.data.preprocess``). Each epoch draws its order from ``generator``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std,
                 train: bool, crop_padding: int = 0, hflip: bool = False, generator: torch.Generator | None = None):
        self.images, self.labels = images, labels
        self.batch_size, self.train = batch_size, train
        self.crop_padding, self.hflip = crop_padding, hflip
        self.generator = generator
        dev = images.device
        self.mean = torch.tensor(mean, device=dev, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=dev, dtype=torch.float32).view(1, -1, 1, 1)
        # in training a trailing partial batch is dropped (batch-norm statistics of a tiny batch are noise),
        # unless it is the only batch
        n = len(labels)
        self.drop_last = train and n >= batch_size

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = (torch.randperm(n, generator=self.generator, device=self.images.device) if self.train
                 else torch.arange(n, device=self.images.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx].float()
            if self.images.dtype == torch.uint8:
                x = x.div_(255)
            if self.train:
                x = random_crop(x, self.crop_padding, self.generator)
                if self.hflip:
                    x = random_hflip(x, self.generator)
            yield (x - self.mean) / self.std, self.labels[idx]


def calibration_batches(loader, n: int) -> list[torch.Tensor]:
    """The inputs of ``n`` training batches, un-augmented and without labels, for methods that calibrate
    (PTQ's ranges, TSQ's least squares). A tensor-held training set is drawn in a fixed order of its own,
    so the training run's random stream is not touched."""
    if isinstance(loader, EpochOfSteps):
        loader = loader.source
    if isinstance(loader, TensorLoader):
        loader = copy.copy(loader)
        loader.crop_padding, loader.hflip = 0, False
        loader.generator = torch.Generator(device=loader.images.device).manual_seed(0)
    out = []
    for x, _ in loader:
        if len(out) == n:
            break
        out.append(x)
    return out


def train_crop(image_size: int, resize=None):
    """ImageNet's training crop (``dataset.augment.resize``). None: RandomResizedCrop (8-100% of the area,
    aspect 3/4-4/3; fb.resnet.torch, torchvision). S: shorter side resized to S, then a random square crop
    (the Caffe recipe of AlexNet, XNOR-Net, SQ: 256). [a, b]: shorter side drawn from a..b first (scale
    augmentation, XNOR-Net's ResNet-18: 256-480)."""
    from torchvision.transforms import v2

    if resize is None:
        return v2.RandomResizedCrop(image_size)
    sizes = [int(resize)] if isinstance(resize, int) else list(range(int(resize[0]), int(resize[1]) + 1))
    return v2.Compose([v2.RandomShortestSize(sizes), v2.RandomCrop(image_size)])


class StreamLoader:
    """ImageNet: a DataLoader over an image folder, with torchvision transforms in worker processes."""

    def __init__(self, folder: Path, batch_size: int, mean, std, train: bool, image_size: int,
                 workers: int, generator: torch.Generator, device: torch.device, hflip: bool = True,
                 resize=None, subset: int | None = None):
        from torchvision import datasets, transforms as T

        tf = ([train_crop(image_size, resize)] + ([T.RandomHorizontalFlip()] if hflip else []) if train
              else [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)])
        ds = datasets.ImageFolder(str(folder), T.Compose(tf + [T.ToTensor(), T.Normalize(mean, std)]))
        keep = fixed_subset(len(ds), subset)
        if keep is not None:
            ds = torch.utils.data.Subset(ds, keep.tolist())
        self.generator = generator
        self.device = device
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=train, drop_last=train and len(ds) >= batch_size,
            num_workers=workers, pin_memory=device.type == "cuda", generator=generator,
            persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class EpochOfSteps:
    """An epoch of exactly ``steps`` batches (``trainer.steps_per_epoch``; Torch-era ImageNet code such as
    XNOR-Net's ``-epochSize``): the batches come from passes over ``source`` that carry on across epochs, each
    pass in a new random order. A resumed run starts a new pass."""

    def __init__(self, source, steps: int):
        self.source, self.steps, self._pass = source, steps, None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            batch = next(self._pass, None) if self._pass is not None else None
            if batch is None:
                self._pass = iter(self.source)
                batch = next(self._pass)
            yield batch


@dataclass
class Data:
    train: object
    val: object  # the test split; with data.holdout, the held-out end of the training split
    in_channels: int
    num_classes: int
    image_size: int
    generator: torch.Generator  # holds the data order; checkpointed for exact resume
    test: object | None = None  # with data.holdout: the test split, evaluated beside the validation set


def in_memory(ds: DictConfig) -> bool:
    """``dataset.storage``: in_memory (decoded once, held as tensors on the device) or folder (streamed from image
    folders, ImageNet). A run config written before the setting existed gets it from ``config.load_run_config``."""
    return ds.storage == "in_memory"


def load_splits(cfg: DictConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits of a small dataset as stored (uint8 images, labels): train and test, with ``data.holdout`` the
    held-out end of train apart. Everything about the files that can be wrong is found here, and
    qbench.config.check_data calls it before a run directory exists (the tensors are cached, so the run's own
    call is cheap)."""
    ds, dc = cfg.dataset, cfg.data
    root = dc.root or default_root()
    splits = {}
    for split in ("train", "test"):
        images, labels, classes = load_split(ds.name, root, split, ds.in_channels, bool(dc.download))
        if split == "train" and ds.get("extra"):  # SVHN's extra split joins the training set
            more, more_labels, _ = load_split(ds.name, root, "extra", ds.in_channels, bool(dc.download))
            images, labels = torch.cat([images, more]), torch.cat([labels, more_labels])
        if len(classes) != ds.num_classes or images.shape[1] != ds.in_channels or images.shape[-1] != ds.image_size:
            raise UserError(f"{ds.name} {split} split under {root} has {len(classes)} classes of "
                            f"{images.shape[1]}x{images.shape[2]}x{images.shape[3]} images; the dataset config "
                            f"expects {ds.num_classes} classes of {ds.in_channels}x{ds.image_size}x{ds.image_size}")
        splits[split] = images, labels
    holdout = dc.get("holdout")  # .get: runs written before the setting existed still resume
    if holdout:
        images, labels = splits.pop("train")
        if holdout >= len(labels):
            raise UserError(f"data.holdout={holdout} leaves no training examples: the {ds.name} training split "
                            f"under {root} has {len(labels)}; valid: 1 to {len(labels) - 1}")
        cut = len(labels) - holdout
        splits = {"train": (images[:cut], labels[:cut]), "holdout": (images[cut:], labels[cut:]), **splits}
    return splits


def build_data(cfg: DictConfig, device: torch.device, seed: int) -> Data:
    """Train and validation batches for ``cfg.dataset``. Validation is the dataset's test split, unless
    ``data.holdout`` = N: then the last N examples of the training split, in file order, are the validation set
    (BinaryConnect's and BNN's 50k / 10k MNIST split) and the test split is ``Data.test``."""
    ds, dc = cfg.dataset, cfg.data
    root = dc.root or default_root()
    bs = int(cfg.trainer.batch_size)
    gen_device = device if in_memory(ds) else torch.device("cpu")
    generator = torch.Generator(device=gen_device).manual_seed(seed)
    if not in_memory(ds):  # (data.holdout is refused for folder datasets by qbench.config.validate)
        train = StreamLoader(locate(ds.name, root, "train")[1], bs, ds.mean, ds.std, True, ds.image_size,
                             dc.workers, generator, device, bool(ds.augment.hflip), ds.augment.get("resize"),
                             dc.subset)
        val = StreamLoader(locate(ds.name, root, "test")[1], bs, ds.mean, ds.std, False, ds.image_size,
                           dc.workers, torch.Generator().manual_seed(0), device, subset=dc.val_subset)
        return Data(_steps(train, cfg), val, ds.in_channels, ds.num_classes, ds.image_size, generator)

    splits = load_splits(cfg)
    # data.subset: of what is trained on; data.val_subset: of the test split
    subsets = {"train": dc.subset, "holdout": None, "test": dc.val_subset}

    # gcn / lcn / zca (checked by qbench.config.validate) replace the mean / std normalization
    loaders, gcn, lcn, zca, whitening = {}, ds.get("gcn"), ds.get("lcn"), ds.get("zca"), None
    pre = bool(gcn or lcn or zca)
    mean, std = ([0.0] * ds.in_channels, [1.0] * ds.in_channels) if pre else (ds.mean, ds.std)
    for split, (images, labels) in splits.items():
        keep = fixed_subset(len(labels), subsets[split])
        if keep is not None:
            images, labels = images[keep], labels[keep]
        train = split == "train"
        images = images.to(device)
        if zca:  # mu and P from the training images (as used: after data.holdout and data.subset), applied to all
            whitening = whitening or preprocess.fit(images, gcn, lcn, float(zca))
        if pre:
            images = preprocess.apply(images, gcn, lcn, whitening)
        loaders[split] = TensorLoader(
            images, labels.to(device), bs if train else int(cfg.trainer.eval_batch_size),
            mean, std, train, crop_padding=ds.augment.crop_padding if train else 0,
            hflip=bool(ds.augment.hflip) if train else False, generator=generator if train else None)
    if "holdout" in loaders:
        return Data(_steps(loaders["train"], cfg), loaders["holdout"], ds.in_channels, ds.num_classes,
                    ds.image_size, generator, test=loaders["test"])
    return Data(_steps(loaders["train"], cfg), loaders["test"], ds.in_channels, ds.num_classes, ds.image_size,
                generator)


def _steps(train, cfg: DictConfig):
    steps = cfg.trainer.get("steps_per_epoch")  # .get: runs written before the setting existed still resume
    return EpochOfSteps(train, int(steps)) if steps else train
