"""Loaders on the real data in $QBENCH_DATA, and on small generated files in every other accepted layout."""
import gzip
from pathlib import Path
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from qbench.config import compose
from qbench.data import build_data, load_split, locate
from qbench.data.augment import random_crop, random_hflip
from qbench.data.loader import EpochOfSteps, TensorLoader, fixed_subset
from qbench.errors import UserError


# --- real data ------------------------------------------------------------------------------------

def test_mnist_real_gzipped_idx(data_root):
    x, y, _ = load_split("mnist", data_root, "train", 1)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.bincount(y)[:3].tolist() == [5923, 6742, 5958]
    xt, yt, _ = load_split("mnist", data_root, "test", 1)
    assert xt.shape == (10000, 1, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]


def test_fashion_mnist_real(data_root):
    _, y, _ = load_split("fashion_mnist", data_root, "train", 1)
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_cifar10_real_image_folder_is_pixel_exact(data_root):
    x, y, classes = load_split("cifar10", data_root, "train", 3)
    assert x.shape == (50000, 3, 32, 32) and classes[0] == "airplane" and classes[-1] == "truck"
    assert torch.bincount(y).tolist() == [5000] * 10
    mean = x.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.49139968, 0.48215841, 0.44653091], dtype=torch.float64), atol=1e-7)
    xt, yt, _ = load_split("cifar10", data_root, "test", 3)
    assert xt.shape == (10000, 3, 32, 32) and torch.bincount(yt).tolist() == [1000] * 10


# --- generated files in each layout ---------------------------------------------------------------

def _write_idx(path, arr, gz):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def test_mnist_uncompressed_idx(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=False)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=False)
    x, y, _ = load_split("mnist", tmp_path, "train", 1)
    assert x.shape == (12, 1, 28, 28) and y.tolist() == list(np.arange(12) % 10)
    assert (tmp_path / ".qbench-cache" / "mnist-train.pt").is_file()  # cached next to writable data


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_and_cifar100_torchvision_pickles(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(d / f"data_batch_{i}", {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                         "labels": [i % 10, 1, 2, 3]})
    _pickle(d / "test_batch", {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]})
    _pickle(d / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    x, y, classes = load_split("cifar10", tmp_path, "train", 3)
    assert x.shape == (20, 3, 32, 32) and y[:4].tolist() == [1, 1, 2, 3] and classes[3] == "c3"
    raw = pickle.load(open(d / "data_batch_1", "rb"))["data"]
    assert torch.equal(x[0], torch.from_numpy(raw[0].reshape(3, 32, 32)))  # CHW planes as stored
    c = tmp_path / "cifar-100-python"
    _pickle(c / "train", {"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), "fine_labels": [99, 0, 5, 7, 1]})
    _pickle(c / "test", {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "fine_labels": [3, 4]})
    x, y, classes = load_split("cifar100", tmp_path, "train", 3)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [99, 0, 5, 7, 1] and len(classes) == 100


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    (tmp_path / "svhn").mkdir()
    X = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)  # SVHN stores H x W x C x N
    savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": X, "y": np.array([[10], [1], [9], [10]])})
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": X[..., :2], "y": np.array([[3], [10]])})
    x, y, _ = load_split("svhn", tmp_path, "train", 3)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 1, 9, 0]  # label 10 means digit 0
    assert torch.equal(x[2], torch.from_numpy(X[..., 2].transpose(2, 0, 1)))


def test_svhn_extra_joins_the_training_set_only_when_asked(tmp_path):
    from omegaconf import OmegaConf
    from scipy.io import savemat

    from qbench.config import check_data, compose
    from qbench.data import build_data
    rng = np.random.default_rng(1)
    (tmp_path / "svhn").mkdir()
    X = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": X[..., :4], "y": np.array([[10], [1], [9], [10]])})
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": X[..., :2], "y": np.array([[3], [10]])})
    cfg = compose(["dataset=svhn", "model=mlp", f"data.root={tmp_path}", "trainer.batch_size=2"])
    assert cfg.dataset.extra is False and build_data(cfg, torch.device("cpu"), 0).train.labels.numel() == 4
    OmegaConf.update(cfg, "dataset.extra", True)
    with pytest.raises(UserError, match="'svhn' \\(extra\\) not found"):  # said before any run starts
        check_data(cfg)
    savemat(tmp_path / "svhn" / "extra_32x32.mat", {"X": X[..., 4:], "y": np.array([[2], [10]])})
    check_data(cfg)
    train = build_data(cfg, torch.device("cpu"), 0).train
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 2, 9]  # 4 train + 2 extra (10 -> 0); test untouched
    assert build_data(cfg, torch.device("cpu"), 0).val.labels.tolist() == [3, 0]


def _image_folder(root, split, classes, n, size, mode, suffix):
    rng = np.random.default_rng(len(split))
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / split / c / f"{i}{suffix}")


def test_image_folder_layout_grayscale(tmp_path):
    _image_folder(tmp_path / "mnist", "train", ["0", "1", "2"], 3, 28, "L", ".png")
    x, y, classes = load_split("mnist", tmp_path, "train", 1)
    assert x.shape == (9, 1, 28, 28) and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and classes == ["0", "1", "2"]
    img = np.asarray(Image.open(tmp_path / "mnist" / "train" / "1" / "0.png"))
    assert torch.equal(x[3, 0], torch.from_numpy(img.copy()))


def test_imagenet_folder_streams_through_dataloader(tmp_path):
    for split in ("train", "val"):
        _image_folder(tmp_path / "imagenet", split, ["n01440764", "n01443537"], 3, 48, "RGB", ".JPEG")
    cfg = compose(["dataset=imagenet", "model=resnet18", f"data.root={tmp_path}", "data.workers=0",
                   "dataset.image_size=32", "trainer.batch_size=4"])
    data = build_data(cfg, torch.device("cpu"), seed=0)
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.long
    assert sum(len(b[1]) for b in data.val) == 6
    for resize in ("40", "[36,60]"):  # Caffe's resize-then-crop, and scale augmentation
        args = ["dataset=imagenet", "model=resnet18", f"data.root={tmp_path}", "data.workers=0",
                "dataset.image_size=32", "trainer.batch_size=4", f"dataset.augment.resize={resize}"]
        data = build_data(compose(args), torch.device("cpu"), seed=0)
        assert next(iter(data.train))[0].shape == (4, 3, 32, 32), resize
    # data.subset / val_subset take a fixed sliver (tier=smoke); steps_per_epoch makes an epoch N batches
    data = build_data(compose(args[:-1] + ["data.subset=4", "data.val_subset=2", "trainer.batch_size=2",
                                           "trainer.steps_per_epoch=3"]), torch.device("cpu"), seed=0)
    assert len(data.train) == 3 and sum(len(y) for _, y in data.train) == 6
    assert sum(len(b[1]) for b in data.val) == 2


def test_epoch_of_steps_carries_the_pass_across_epochs():
    """XNOR-Net's code: an epoch is -epochSize batches, wherever the pass over the data stands."""
    epochs = EpochOfSteps([1, 2, 3], steps=2)
    assert len(epochs) == 2
    assert [list(epochs) for _ in range(3)] == [[1, 2], [3, 1], [2, 3]]
    assert list(EpochOfSteps([1, 2], steps=5)) == [1, 2, 1, 2, 1]


def test_steps_per_epoch_on_a_tensor_dataset(data_root):
    cfg = compose(["dataset=mnist", f"data.root={data_root}", "data.subset=100", "trainer.batch_size=30",
                   "trainer.steps_per_epoch=7"])
    train = build_data(cfg, torch.device("cpu"), seed=0).train
    batches = [x for x, _ in train] + [x for x, _ in train]
    assert len(batches) == 14 and all(len(x) == 30 for x in batches)  # passes of 3 full batches of 100 images
    crossing = torch.cat(batches[6:9]).flatten(1)  # the third pass: epoch 1's last batch, epoch 2's first two
    assert len(torch.unique(crossing, dim=0)) == 90  # one pass: no image twice


def test_imagenet_training_crops():
    from PIL import Image

    from qbench.data.loader import train_crop
    img = Image.new("RGB", (80, 40))
    torch.manual_seed(0)
    assert train_crop(32, 40)(img).size == (32, 32)
    resize = train_crop(32, 40).transforms[0]  # the shorter side becomes 40, the aspect ratio stays
    assert resize(img).size == (80, 40) and train_crop(32, [48, 48]).transforms[0](img).size == (96, 48)
    sides = {train_crop(32, [40, 44]).transforms[0](img).size[1] for _ in range(60)}
    assert sides == {40, 41, 42, 43, 44}


def test_missing_data_names_root_and_both_layouts(tmp_path):
    with pytest.raises(UserError) as e:
        locate("cifar10", tmp_path, "train")
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-10-batches-py" in msg and "cifar10/{train,test}/<class>" in msg
    with pytest.raises(UserError, match="valid: cifar10, cifar100, fashion_mnist, imagenet, mnist, svhn"):
        locate("cifar11", tmp_path, "train")


# --- batching and augmentation --------------------------------------------------------------------

def test_random_crop_is_a_window_of_the_zero_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = random_crop(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)  # 16 images all at offset (2, 2) would be a 1-in-25^16 event


def test_random_hflip_flips_about_half():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 1, 4, 4)
    out = random_hflip(x, g)
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250


def test_fixed_subset_is_seed_independent_and_covers_classes(data_root):
    _, y, _ = load_split("mnist", data_root, "train", 1)
    idx = fixed_subset(len(y), 500)
    assert torch.equal(idx, fixed_subset(len(y), 500))
    assert torch.bincount(y[idx], minlength=10).min() > 25
    assert fixed_subset(len(y), None) is None and fixed_subset(10, 20) is None


def test_tensor_loader_batches_normalises_and_drops_partial_training_batch():
    images = torch.full((10, 1, 2, 2), 255, dtype=torch.uint8)
    loader = TensorLoader(images, torch.arange(10), 4, [0.5], [0.25], train=True,
                          generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(loader) == 2 and [len(b[1]) for b in batches] == [4, 4]
    assert torch.all(batches[0][0] == 2.0)  # (1 - 0.5) / 0.25
    val = TensorLoader(images, torch.arange(10), 4, [0.5], [0.25], train=False)
    assert [len(b[1]) for b in val] == [4, 4, 2]


def test_download_goes_through_torchvision_into_its_layout(tmp_path, monkeypatch):
    """With data.download=true and no files, torchvision's dataset class is asked to download into the data
    root (a stand-in writes what torchvision writes: this machine has no internet), then read as usual."""
    import torchvision.datasets as tvd
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            prefix, n = ("train", 8) if train else ("t10k", 4)
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28)), gz=True)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=True)

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    with pytest.raises(UserError, match="or set data.download=true"):
        load_split("mnist", tmp_path / "fresh", "train", 1)
    x, y, _ = load_split("mnist", tmp_path / "fresh", "train", 1, allow_download=True)
    assert calls == [(str(tmp_path / "fresh"), True, True), (str(tmp_path / "fresh"), False, True)]
    assert x.shape == (8, 1, 28, 28) and y.tolist() == list(range(8))


def test_zca_matrix_by_hand():
    from qbench.data.preprocess import zca_fit

    x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # mean 0; X^T X / (N - 1) = diag(8, 2) / 3; P = diag(1 / sqrt(8/3 + eps), 1 / sqrt(2/3 + eps))
    mu, p = zca_fit(x, eps=1e-5)
    assert torch.equal(mu, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(p, torch.diag(torch.tensor([8 / 3 + 1e-5, 2 / 3 + 1e-5], dtype=torch.float64).rsqrt()))
    # a rotated, correlated cloud: P is symmetric (ZCA, not PCA) and whitens it
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5000, 3, generator=g, dtype=torch.float64) @ torch.tensor(
        [[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]], dtype=torch.float64) + 3
    mu, p = zca_fit(y, eps=1e-12)
    white = (y - mu) @ p
    assert torch.allclose(p, p.t()) and torch.allclose(white.t() @ white / 4999, torch.eye(3, dtype=torch.float64),
                                                       atol=1e-9)


def test_gcn_by_hand():
    from qbench.data.preprocess import global_contrast_normalize

    x = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]], dtype=torch.float64)
    # row 1: minus its mean 3 -> [-2, -1, 0, 3], norm sqrt(14); scaled to norm 55. Row 2 is constant: only centred
    y = global_contrast_normalize(x, 55.0)
    assert torch.allclose(y[0], torch.tensor([-2.0, -1, 0, 3], dtype=torch.float64) * 55 / 14 ** 0.5)
    assert torch.equal(y[1], torch.zeros(4, dtype=torch.float64))


def test_lcn_by_hand():
    from math import exp, sqrt

    from qbench.data.preprocess import gaussian_kernel, local_contrast_normalize

    a, b = exp(-1 / 8), exp(-1 / 4)  # sigma 2: weights of an edge and a corner neighbour, the centre's is 1
    total = 1 + 4 * a + 4 * b
    g = gaussian_kernel(3)
    assert torch.allclose(g, torch.tensor([[b, a, b], [a, 1, a], [b, a, b]], dtype=torch.float64) / total)
    # a 3x3 image of ones, zero-padded: G * x is 1 at the centre, (1 + 2a + b) / total at a corner,
    # (1 + 3a + 2b) / total on an edge; d = sqrt(G * x^2) = sqrt(G * x) here
    corner, edge = (1 + 2 * a + b) / total, (1 + 3 * a + 2 * b) / total
    mean_d = (4 * sqrt(corner) + 4 * sqrt(edge) + 1) / 9
    y = local_contrast_normalize(torch.ones(1, 1, 3, 3, dtype=torch.float64), 3)[0, 0]
    assert y[1, 1] == 0  # the centre equals its neighbourhood's mean
    assert abs(y[0, 0] - (1 - corner) / max(sqrt(corner), mean_d)) < 1e-12
    assert abs(y[0, 1] - (1 - edge) / max(sqrt(edge), mean_d)) < 1e-12
    assert torch.equal(local_contrast_normalize(torch.zeros(1, 2, 3, 3, dtype=torch.float64), 3),
                       torch.zeros(1, 2, 3, 3, dtype=torch.float64))  # the 1e-4 floor: no division by zero


def test_whitened_images_from_the_training_split(data_root):
    from qbench.data.preprocess import global_contrast_normalize, zca_fit

    over = [f"data.root={data_root}", "data.subset=300", "data.val_subset=50", "trainer.batch_size=300",
            "trainer.eval_batch_size=50", "dataset.augment.crop_padding=0", "dataset.augment.hflip=false"]
    images, _, _ = load_split("mnist", data_root, "train", 1)
    test, _, _ = load_split("mnist", data_root, "test", 1)
    rows = images[fixed_subset(len(images), 300)].reshape(300, -1).double() / 255
    test_rows = test[fixed_subset(len(test), 50)].reshape(50, -1).double() / 255
    for gcn in (None, 55.0):
        extra = ["dataset.zca=1e-5"] + ([f"dataset.gcn={gcn}"] if gcn else [])
        data = build_data(compose(["dataset=mnist", *extra, *over]), torch.device("cpu"), seed=0)
        (x, _), (v, _) = next(iter(data.train)), next(iter(data.val))
        prep = (lambda r: global_contrast_normalize(r, gcn)) if gcn else (lambda r: r)
        mu, p = zca_fit(prep(rows), 1e-5)  # the training split's, applied to the test split too
        assert torch.allclose(v.flatten(1).double(), (prep(test_rows) - mu) @ p, atol=1e-4)
        assert x.flatten(1).double().mean(0).abs().max() < 1e-4  # the batch is the whole training split: centred
    gcn_only = build_data(compose(["dataset=mnist", "dataset.gcn=55", *over]), torch.device("cpu"), seed=0)
    assert torch.allclose(next(iter(gcn_only.val))[0].flatten(1).double(), global_contrast_normalize(test_rows, 55),
                          atol=1e-5)
    from qbench.data.preprocess import local_contrast_normalize
    lcn = build_data(compose(["dataset=mnist", "dataset.gcn=1", "dataset.lcn=7", *over]), torch.device("cpu"), seed=0)
    expected = local_contrast_normalize(global_contrast_normalize(test_rows, 1).view(50, 1, 28, 28), 7)
    assert torch.allclose(next(iter(lcn.val))[0].double(), expected, atol=1e-5)


def test_holdout_is_the_end_of_the_training_split_in_file_order(data_root):
    """BinaryConnect's and BNN's MNIST: train on the first 50000, validate on the last 10000, test on the test
    split. data.subset then draws from the first part only."""
    images, labels, _ = load_split("mnist", data_root, "train", 1)
    test, test_labels, _ = load_split("mnist", data_root, "test", 1)
    over = ["dataset=mnist", f"data.root={data_root}", "dataset.mean=[0]", "dataset.std=[1]",
            "trainer.eval_batch_size=20000"]
    data = build_data(compose(over + ["data.holdout=10000", "trainer.batch_size=50000"]), torch.device("cpu"), 0)
    (v, vy), = list(data.val)
    assert torch.equal(v, images[50000:].float() / 255) and torch.equal(vy, labels[50000:])
    (t, ty), = list(data.test)
    assert torch.equal(t, test.float() / 255) and torch.equal(ty, test_labels)
    ink = lambda x: torch.sort((x * 255).round().long().flatten(1).sum(1)).values  # noqa: E731 -- per image, exact
    (x, _), = list(data.train)  # one batch of the whole (shuffled) training part: exactly the first 50000
    assert len(x) == 50000 and torch.equal(ink(x), ink(images[:50000].float() / 255))
    sub = build_data(compose(over + ["data.holdout=10000", "data.subset=300", "trainer.batch_size=300"]),
                     torch.device("cpu"), 0)
    (xs, _), = list(sub.train)
    assert torch.equal(ink(xs), ink(images[:50000][fixed_subset(50000, 300)].float() / 255))
    no_holdout = build_data(compose(over + ["data.val_subset=10"]), torch.device("cpu"), 0)
    assert no_holdout.test is None and len(next(iter(no_holdout.val))[0]) == 10  # validation = the test split


def test_holdout_is_excluded_from_the_whitening_fit(data_root):
    from qbench.data.preprocess import zca_fit

    images, _, _ = load_split("mnist", data_root, "train", 1)
    cfg = compose(["dataset=mnist", f"data.root={data_root}", "dataset.zca=1e-5", "data.holdout=59700",
                   "trainer.batch_size=300", "trainer.eval_batch_size=100"])
    data = build_data(cfg, torch.device("cpu"), 0)
    mu, p = zca_fit(images[:300].reshape(300, -1).double() / 255, 1e-5)  # the 300 trained on, not the held out
    held = images[300:400].reshape(100, -1).double() / 255
    assert torch.allclose(next(iter(data.val))[0].flatten(1).double(), (held - mu) @ p, atol=1e-4)


def test_holdout_larger_than_the_training_split_is_one_line(data_root):
    cfg = compose(["dataset=mnist", f"data.root={data_root}", "data.holdout=60000"])
    with pytest.raises(UserError, match=r"data.holdout=60000 leaves no training examples.*has 60000; valid: 1 to 59999"):
        build_data(cfg, torch.device("cpu"), 0)
