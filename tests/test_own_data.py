"""Your own data: ``dataset=folder`` (an ImageFolder tree of PNGs the tests write) and ``dataset=target`` (a callable
returning torch Datasets), both served through LoaderSplit."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import base as data_base
from datasets import build_dataset, identity
from datasets.base import LoaderSplit, carve_validation, channel_stats
from foundations.errors import UserError

CLASSES = ("cat", "dog", "eel")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Digests and statistics are cached under XDG_CACHE_HOME: a fresh one per test, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_folder(root: Path, sizes=None, shape=(12, 10), seed=0, mode="RGB") -> dict[str, list[tuple[np.ndarray, int]]]:
    """An ImageFolder tree of random PNGs; returns, per split, (pixels as written (H, W, C), label) in file order."""
    sizes = sizes or {"train": 20, "test": 6}
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in sizes.items():
        written[split] = []
        for label, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (*shape, 3) if mode == "RGB" else shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i:03d}.png")
                written[split].append((pixels if mode == "RGB" else pixels[..., None], label))
    return written


def stacked(items) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([torch.from_numpy(p).permute(2, 0, 1) for p, _ in items])
    return x, torch.tensor([y for _, y in items])


def raw_pixels(split) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split in order, undone from normalize=none (x/255) back to uint8."""
    xs, ys = zip(*split.batches(64))
    return (torch.cat(xs) * 255).round().to(torch.uint8), torch.cat(ys)


def folder_cfg(root, **kw):
    return {"name": "folder", "data_dir": str(root), **kw}


# ------------------------------------------------------------------------------------------------ folder
def test_folder_serves_the_written_images_with_validation_carved_by_split_seed(tmp_path):
    written = write_folder(tmp_path / "data")
    data = build_dataset(folder_cfg(tmp_path / "data", val_size=12, normalize="none"))
    assert (data.input_shape, data.num_classes) == ((3, 12, 10), 3)
    assert isinstance(data.train, LoaderSplit) and (len(data.train), len(data.val), len(data.test)) == (48, 12, 18)
    train_x, train_y = stacked(written["train"])
    keep, val = carve_validation(60, 12, 0)
    x, y = raw_pixels(data.train)
    assert torch.equal(x, train_x[keep]) and torch.equal(y, train_y[keep])
    x, y = raw_pixels(data.val)
    assert torch.equal(x, train_x[val]) and torch.equal(y, train_y[val])
    assert torch.equal(raw_pixels(data.test)[0], stacked(written["test"])[0])
    moved = build_dataset(folder_cfg(tmp_path / "data", val_size=12, normalize="none", split_seed=1))
    assert not torch.equal(raw_pixels(moved.val)[0], raw_pixels(data.val)[0])
    # default: 10% carved
    assert len(build_dataset(folder_cfg(tmp_path / "data")).val) == 6


def test_folder_val_directory_is_the_validation_split(tmp_path):
    written = write_folder(tmp_path / "data", {"train": 8, "val": 3, "test": 2})
    data = build_dataset(folder_cfg(tmp_path / "data", normalize="none"))
    assert (len(data.train), len(data.val), len(data.test)) == (24, 9, 6)
    assert torch.equal(raw_pixels(data.val)[0], stacked(written["val"])[0])
    assert torch.equal(raw_pixels(data.train)[0], stacked(written["train"])[0])  # nothing carved out of train
    with pytest.raises(UserError, match=r"^dataset\.val_size: .* has a val/ folder"):
        build_dataset(folder_cfg(tmp_path / "data", val_size=5))


def test_folder_statistics_are_the_training_splits_and_cached(tmp_path, monkeypatch):
    written = write_folder(tmp_path / "data")
    data = build_dataset(folder_cfg(tmp_path / "data", val_size=12))
    keep, _ = carve_validation(60, 12, 0)
    mean, std = channel_stats(stacked(written["train"])[0][keep])  # the in-memory definition, two-pass
    expect = data_base.Normalization.standard(mean, std)
    assert np.allclose(data.train.norm.scale, expect.scale, rtol=1e-9)
    assert np.allclose(data.train.norm.shift, expect.shift, rtol=1e-9)
    x = torch.cat([x for x, _ in data.train.batches(64)])
    assert x.mean().abs() < 1e-5 and abs(x.std().item() - 1) < 1e-2
    # a second build reads the cache: no pass over the images
    monkeypatch.setattr(data_base, "streamed_channel_stats", lambda *a, **k: pytest.fail("statistics recomputed"))
    again = build_dataset(folder_cfg(tmp_path / "data", val_size=12, train_limit=10))
    assert again.train.norm == data.train.norm and len(again.train) == 10
    given = build_dataset(folder_cfg(tmp_path / "data", val_size=12, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    assert given.train.norm == data_base.Normalization.standard([0.5] * 3, [0.25] * 3)


def test_folder_resize_and_greyscale(tmp_path):
    written = write_folder(tmp_path / "data", {"train": 4, "test": 2})
    data = build_dataset(folder_cfg(tmp_path / "data", val_size=2, resize=[6, 5], channels=1, normalize="none"))
    assert data.input_shape == (1, 6, 5)
    expect = Image.fromarray(written["test"][0][0]).convert("L").resize((5, 6), Image.BILINEAR)
    assert torch.equal(raw_pixels(data.test)[0][0, 0], torch.from_numpy(np.array(expect)))


def test_folder_order_is_a_function_of_the_seed_whatever_the_workers(tmp_path):
    write_folder(tmp_path / "data", {"train": 10, "test": 2})
    one = build_dataset(folder_cfg(tmp_path / "data", val_size=5, augment=True))
    two = build_dataset(folder_cfg(tmp_path / "data", val_size=5, augment=True, num_workers=2))

    def epoch(split, seed):
        return [(x, y) for x, y in split.batches(8, shuffle=True, seed=seed)]

    a, b, c = epoch(one.train, 3), epoch(two.train, 3), epoch(one.train, 4)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_folder_identity_is_the_content_not_the_path(tmp_path):
    write_folder(tmp_path / "data", {"train": 3, "test": 1})
    first = identity(folder_cfg(tmp_path / "data"))
    assert "data_dir" not in first and len(first["content"]) == 64
    shutil.copytree(tmp_path / "data", tmp_path / "copy", copy_function=shutil.copy)  # new paths, new mtimes
    assert identity(folder_cfg(tmp_path / "copy")) == first
    pixels = np.zeros((12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "copy" / "train" / "dog" / "001.png")
    assert identity(folder_cfg(tmp_path / "copy"))["content"] != first["content"]
    assert identity(folder_cfg(tmp_path / "data", val_size=2)) == {**first, "val_size": 2}


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: shutil.rmtree(r / "test"), r"^dataset\.data_dir: .* has no test/ folder"),
        (
            lambda r: Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(r / "train" / "cat" / "odd.png"),
            r"^dataset\.resize: the images differ in size \(.*: 12x10, .*odd\.png: 5x5\); set dataset\.resize",
        ),
        (
            lambda r: (r / "test" / "fox").mkdir() or shutil.copy(r / "test" / "cat" / "000.png", r / "test" / "fox"),
            r"^dataset\.data_dir: .*test has class folder 'fox' that train/ lacks",
        ),
        (
            lambda r: (r / "train" / "cat" / "bad.png").write_bytes(b"not a png"),
            r"^dataset\.data_dir: .*bad\.png is not a "
            r"readable image",
        ),
        (lambda r: (r / "train" / "gnu").mkdir(), r"^dataset\.data_dir: .*gnu holds no image"),
    ],
)
def test_folder_errors_are_one_line(tmp_path, damage, message):
    write_folder(tmp_path / "data", {"train": 2, "test": 1})
    damage(tmp_path / "data")
    with pytest.raises(UserError, match=message) as err:
        build_dataset(folder_cfg(tmp_path / "data", val_size=1))
    assert "\n" not in str(err.value)


def test_folder_config_errors(tmp_path):
    with pytest.raises(UserError, match=r"^dataset\.num_train: Key 'num_train' not in 'FolderConfig'"):
        build_dataset(folder_cfg(tmp_path, num_train=5))
    with pytest.raises(UserError, match=r"^dataset\.mean: needs one value per channel: 3 \(got 1\)"):
        build_dataset(folder_cfg(tmp_path, mean=[0.5], std=[0.2]))
    with pytest.raises(UserError, match=r"^dataset\.mean: give both"):
        build_dataset(folder_cfg(tmp_path, mean=[0.5, 0.5, 0.5]))
    with pytest.raises(UserError, match=r"^dataset\.data_dir: .*missing mandatory value"):
        build_dataset({"name": "folder"})


# ------------------------------------------------------------------------------------------------ target
class Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _images(n: int, seed: int, shape=(2, 6, 5)) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def tiny(
    kind: str = "uint8",
    n_train: int = 30,
    n_test: int = 8,
    classes: int = 3,
    with_val: bool = False,
    as_dict: bool = False,
    odd_item: int = -1,
    bad_label: int = -1,
):
    """The callable the tests point ``dataset._target_`` at: images in the form ``kind``."""

    def convert(x: torch.Tensor):
        if kind == "float":
            return x.float() / 255
        if kind == "pil":
            return Image.fromarray(x[0].numpy())  # greyscale: only the first channel
        if kind == "numpy":
            return x.permute(1, 2, 0).numpy()
        return x

    def split(n, seed):
        x = _images(n, seed)
        items = [(convert(x[i]), int(i % classes)) for i in range(n)]
        if 0 <= odd_item < n:
            items[odd_item] = (convert(_images(1, 99, (2, 4, 4))[0]), 0)
        if 0 <= bad_label < n:
            items[bad_label] = (items[bad_label][0], classes + 4)
        return Items(items)

    parts = {"train": split(n_train, 0), "test": split(n_test, 1)}
    if with_val:
        parts["val"] = split(5, 2)
    if as_dict:
        return parts
    return (parts["train"], parts["val"], parts["test"]) if with_val else (parts["train"], parts["test"])


TARGET = "tests.test_own_data.tiny"


def target_cfg(**kw):
    return {"name": "target", "_target_": TARGET, "normalize": "none", **kw}


@pytest.mark.parametrize("kind", ["uint8", "float", "numpy", "pil"])
def test_target_infers_shape_and_classes_and_serves_the_images(kind):
    data = build_dataset(target_cfg(kind=kind, val_size=6))
    channels = 1 if kind == "pil" else 2
    assert (data.input_shape, data.num_classes) == ((channels, 6, 5), 3)
    assert isinstance(data.test, LoaderSplit) and (len(data.train), len(data.val), len(data.test)) == (24, 6, 8)
    x, y = raw_pixels(data.test)
    assert torch.equal(x, _images(8, 1)[:, :channels]) and torch.equal(y, torch.arange(8) % 3)
    keep, _ = carve_validation(30, 6, 0)
    assert torch.equal(raw_pixels(data.train)[0], _images(30, 0)[keep][:, :channels])


def test_target_validation_split_dict_and_given_classes():
    data = build_dataset(target_cfg(with_val=True))
    assert (len(data.train), len(data.val), len(data.test)) == (30, 5, 8)
    assert torch.equal(raw_pixels(data.val)[0], _images(5, 2))
    assert len(build_dataset(target_cfg(as_dict=True)).val) == 3  # 10% carved
    assert build_dataset(target_cfg(num_classes=7)).num_classes == 7
    standard = build_dataset({"name": "target", "_target_": TARGET, "val_size": 6})
    x = torch.cat([x for x, _ in standard.train.batches(64)])
    assert x.mean().abs() < 1e-5 and abs(x.std().item() - 1) < 0.02


@pytest.mark.parametrize(
    "cfg,message",
    [
        (dict(odd_item=3), r"^dataset\._target_: images differ in shape \(train item 0: 2x6x5, train item 3: 2x4x4\)"),
        (
            dict(bad_label=2, num_classes=3),
            r"^dataset\.num_classes: train labels span 0\.\.7 but dataset\.num_classes ",
        ),
        (dict(as_dict=True, with_val=True, val_size=3), r"^dataset\.val_size: .* returns a validation split"),
        (dict(classes=1), r"^dataset\._target_: the training labels hold one class"),
        (
            dict(_target_="tests.test_own_data.nothing_here"),
            r"^dataset\._target_: calling tests\.test_own_data\."
            r"nothing_here failed",
        ),
        (dict(_target_="tests.test_own_data.write_folder"), r"^dataset\._target_: calling"),
    ],
)
def test_target_errors_are_one_line(cfg, message):
    with pytest.raises(UserError, match=message) as err:
        build_dataset(target_cfg(**cfg))
    assert "\n" not in str(err.value)


def float_out_of_range():
    bad = Items([(torch.full((1, 3, 3), 2.0), 0), (torch.zeros(1, 3, 3), 1)] * 5)
    return bad, bad


def test_target_refuses_normalized_float_images():
    with pytest.raises(UserError, match=r"^dataset\._target_: train item 0: float images must lie in \[0, 1\]"):
        build_dataset({"name": "target", "_target_": "tests.test_own_data.float_out_of_range", "val_size": 2})


# ------------------------------------------------------------------------------------------------ in experiments
def test_an_experiment_on_a_folder_is_named_by_its_content_not_its_path(tmp_path):
    from foundations.store import Store
    from runners.experiment import run_experiment
    from tests.conftest import make_run

    write_folder(tmp_path / "data", {"train": 12, "test": 3}, shape=(6, 6))
    args = [
        "dataset=folder",
        "dataset.val_size=6",
        "model=lenet300",
        "model.widths=[16]",
        "train.epochs=1",
        "train.batch_size=16",
    ]
    store = Store(tmp_path / "results")
    first = run_experiment(make_run(tmp_path, *args, f"dataset.data_dir={tmp_path / 'data'}"), store)
    assert first["status"] == "ok" and first["dataset"] == "folder"
    shutil.copytree(tmp_path / "data", tmp_path / "copy", copy_function=shutil.copy)
    again = Store(tmp_path / "results")
    assert run_experiment(make_run(tmp_path, *args, f"dataset.data_dir={tmp_path / 'copy'}"), again) == first
    assert again.computed == []
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "copy" / "train" / "eel" / "000.png")
    changed = Store(tmp_path / "results")
    other = run_experiment(make_run(tmp_path, *args, f"dataset.data_dir={tmp_path / 'copy'}"), changed)
    assert other["dense_stage"] != first["dense_stage"]


def test_a_target_dataset_and_a_target_model_compose_through_hydra(tmp_path):
    """The issue's spelling: ``dataset._target_=...`` / ``model._target_=...`` plus ``+key=value`` arguments."""
    from foundations.store import Store
    from runners.experiment import run_experiment
    from tests.conftest import make_run

    run = make_run(
        tmp_path,
        "dataset=target",
        f"dataset._target_={TARGET}",
        "+dataset.kind=numpy",
        "+dataset.n_train=40",
        "dataset.val_size=8",
        "model=target",
        "model._target_=tests.test_own_model.TinyNet",
        "+model.hidden=5",
        "train.epochs=1",
        "train.batch_size=16",
        "method=magnitude",
        "method.sparsity=0.5",
        "method.recovery.epochs=1",
    )
    assert run.dataset.kwargs == {"kind": "numpy", "n_train": 40} and run.model.kwargs == {"hidden": 5}
    record = run_experiment(run, Store(run.paths.results))
    assert record["status"] == "ok" and record["model"] == "tests.test_own_model.TinyNet"
    assert record["params_total"] == (2 * 5 * 9 + 5) + 2 * 5 + (5 * 3 + 3)  # conv, BN, fc: 2 channels in, 3 classes
    assert record["density"] == pytest.approx(0.5, abs=0.02)


# ------------------------------------------------------------------------------------------------ as a user runs it
ROOT = Path(__file__).resolve().parent.parent
README_MARK = "# your own data (tests/test_own_data.py runs these lines as written)\n"
MY_PACKAGE = """import torchvision


def build(root):
    return torchvision.datasets.ImageFolder(f"{root}/train"), torchvision.datasets.ImageFolder(f"{root}/test")
"""


def readme_own_data_lines() -> list[str]:
    block = (ROOT / "README.md").read_text().split(README_MARK, 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture
def user_folder(tmp_path):
    """A user's folder: my_data/ (an ImageFolder tree), my_package/data.py, and prunelab-train on the PATH as pip
    installs it (no current folder on sys.path; this checkout's packages first, as an install of it would give)."""
    import sys

    write_folder(tmp_path / "my_data", {"train": 20, "test": 6})
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "__init__.py").write_text("")
    (tmp_path / "my_package" / "data.py").write_text(MY_PACKAGE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "prunelab-train"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(1, {str(ROOT)!r})\nfrom runners.train import cli\n"
        f"if __name__ == '__main__':\n    sys.exit(cli())\n"
    )
    script.chmod(0o755)
    return tmp_path


def as_written(folder: Path, line: str):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{folder / 'bin'}{os.pathsep}{env['PATH']}", WANDB_MODE="disabled", XDG_CACHE_HOME=str(folder))
    return subprocess.run(["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # two trainings through the console script (~1 min on a loaded 2-core box)
def test_the_readmes_own_data_commands_run_as_written(user_folder):
    import json

    lines = readme_own_data_lines()
    assert len(lines) == 2 and "dataset=folder" in lines[0] and "dataset=target" in lines[1]
    for line in lines:
        result = as_written(user_folder, line)
        assert result.returncode == 0, result.stderr[-3000:]
        record_line = next(row for row in result.stdout.splitlines() if row.strip().startswith("record:"))
        record = json.loads(Path(record_line.split(":", 1)[1].strip()).read_text())
        assert record["status"] == "ok" and record["method"] == "magnitude"
        assert record["density"] == pytest.approx(0.1, abs=0.01)  # magnitude's default sparsity 0.9


def one_line_exit_2(result) -> str:
    lines = [row for row in result.stderr.splitlines() if row.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_a_wrong_data_dir_is_one_line(user_folder):
    line = readme_own_data_lines()[0].replace("dataset.data_dir=my_data", "dataset.data_dir=my_dta")
    assert one_line_exit_2(as_written(user_folder, line)).startswith(
        "error: dataset.data_dir: my_dta has no train/ folder; an ImageFolder tree needs train/<class>/<images>"
    )
    assert not (user_folder / "results").exists()


def test_a_callable_in_the_current_folder_needs_it_on_the_path(user_folder):
    line = readme_own_data_lines()[1].replace("PYTHONPATH=. ", "")
    assert one_line_exit_2(as_written(user_folder, line)).startswith(
        "error: dataset._target_: cannot import my_package.data.build: no module 'my_package' on the Python path; "
    )
    model = "prunelab-train model=target model._target_=my_package.nets.build dataset=synthetic"
    message = one_line_exit_2(as_written(user_folder, model))
    assert (
        message.startswith("error: model._target_: cannot import my_package.nets.build") and "PYTHONPATH=." in message
    )


@pytest.mark.parametrize("name", ["folder", "target"])
def test_own_data_validates_with_the_default_validation_split(tmp_path, name):
    from tests.conftest import make_run

    extra = [f"dataset.data_dir={tmp_path}"] if name == "folder" else [f"dataset._target_={TARGET}"]
    run = make_run(tmp_path, f"dataset={name}", *extra, "method=magnitude")  # the old check compared None > 0
    assert run.dataset.val_size is None
