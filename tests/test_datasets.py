import gzip
import pickle

import numpy as np
import pytest
import torch

from datasets import build_dataset
from datasets.config import DatasetConfig
from runners.errors import UserError
from tests.conftest import needs_fmnist


def write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_mnist_like(folder, n_train=300, n_test=50, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train_x = rng.integers(0, 256, (n_train, 28, 28))
    write_idx(folder / "train-images-idx3-ubyte.gz", train_x)
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return train_x


def test_idx_files_load_with_validation_carved_from_train(tmp_path):
    raw = write_mnist_like(tmp_path)
    data = build_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(tmp_path), val_size=60))
    assert (len(data.train), len(data.val), len(data.test)) == (240, 60, 50)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.train.images.dtype == torch.uint8
    # train and validation are disjoint pieces of the original training file
    rows = {tuple(r.flatten().tolist()) for r in data.train.images}
    assert not rows & {tuple(r.flatten().tolist()) for r in data.val.images}
    assert len(rows) + len(data.val) == len({tuple(r.flatten().tolist()) for r in torch.from_numpy(raw).to(torch.uint8)})
    x, y = next(data.train.batches(32))
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28) and y.max() < 10


def test_torchvision_layout_and_mnist(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    assert len(build_dataset(DatasetConfig(name="mnist", data_dir=str(tmp_path), val_size=10)).test) == 50


def test_shuffle_is_a_function_of_the_seed(tmp_path):
    write_mnist_like(tmp_path)
    split = build_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(tmp_path), val_size=10)).train
    first = [y for _, y in split.batches(16, shuffle=True, seed=3)]
    again = [y for _, y in split.batches(16, shuffle=True, seed=3)]
    other = [y for _, y in split.batches(16, shuffle=True, seed=4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_truncated_idx_is_reported(tmp_path):
    write_mnist_like(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())[:-100]
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(UserError, match="truncated"):
        build_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(tmp_path), val_size=10))


def test_missing_files_name_the_debian_package(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        build_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(tmp_path)))


def test_cifar_pickle_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 20))}, fh)
    data = build_dataset(DatasetConfig(name="cifar10", data_dir=str(tmp_path), val_size=10, augment=True))
    assert (len(data.train), len(data.val), len(data.test), data.input_shape) == (90, 10, 20, (3, 32, 32))
    a = [x for x, _ in data.train.batches(30, shuffle=True, seed=1)]
    b = [x for x, _ in data.train.batches(30, shuffle=True, seed=1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # augmentation is deterministic per seed


def test_bad_val_size():
    with pytest.raises(UserError, match="dataset.val_size"):
        DatasetConfig(val_size=-1)


@pytest.mark.parametrize("name", ["mnist_5k", "digits", "synthetic"])
def test_packaged_datasets(name):
    data = build_dataset(DatasetConfig(name=name, val_size=100))
    assert len(data.val) == 100 and len(data.train) > 0 and len(data.test) > 0


@needs_fmnist
def test_installed_fashion_mnist():
    data = build_dataset(DatasetConfig())
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
