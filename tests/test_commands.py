"""The console scripts of pyproject.toml as pip installs them: help, shell completion, the report."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory):
    """Each entry point written as the launcher pip writes for it (shebang: this interpreter)."""
    folder = tmp_path_factory.mktemp("bin")
    for name, target in scripts().items():
        module, func = target.split(":")
        path = folder / name
        path.write_text(
            f"#!{sys.executable}\nimport re, sys\nfrom {module} import {func}\n"
            f"if __name__ == '__main__':\n"
            f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            f"    sys.exit({func}())\n"
        )
        path.chmod(0o755)
    return folder


def run(bin_dir, *args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_entry_points_exist():
    assert {
        "prunelab-train": "runners.train:cli",
        "prunelab-report": "analysis.report:main",
        "prunelab-export": "runners.export:main",
        "prunelab-reproduce": "runners.reproduce:cli",
    }.items() <= scripts().items()
    import importlib

    for target in scripts().values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


def groups(help_text: str) -> dict[str, str]:
    block = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    return dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)


@pytest.mark.slow  # two launches of the CLI (~5 s each on a loaded 2-core box)
def test_help_lists_the_selectable_groups_and_only_the_chosen_datasets_fields(bin_dir):
    default = run(bin_dir, "prunelab-train", "--help")
    assert default.returncode == 0, default.stderr
    listed = groups(default.stdout)
    assert set(listed) == {"dataset", "experiment", "experiment/arm", "logger", "method", "model", "train"}
    assert "folder" in listed["dataset"] and "torchvision" in listed["model"] and "schema" not in default.stdout
    config = default.stdout.split("== Config ==")[1]
    assert "name: fashion_mnist" in config and "data_dir:" in config
    assert "num_train" not in config and "input_shape" not in config and "depth: null" in config
    synthetic = run(bin_dir, "prunelab-train", "dataset=synthetic", "model=torchvision", "--help")
    config = synthetic.stdout.split("== Config ==")[1]
    assert "num_train: 2000" in config and "input_shape:" in config and "data_dir" not in config
    assert "arch: ???" in config and "depth" not in config  # torchvision's fields, not the built-ins'


@pytest.mark.slow  # three launches
def test_shell_completion_returns_group_names(bin_dir):
    top = run(bin_dir, "prunelab-train", "-sc", "query=bash", env={"COMP_LINE": "prunelab-train "})
    assert top.returncode == 0, top.stderr
    words = set(top.stdout.split())
    assert {"model=", "dataset=", "method=", "train=", "logger="} <= words
    models = run(bin_dir, "prunelab-train", "-sc", "query=bash", env={"COMP_LINE": "prunelab-train model="})
    assert {"model=torchvision", "model=target", "model=lenet300"} <= set(models.stdout.split())
    install = run(bin_dir, "prunelab-train", "-sc", "install=bash")
    assert "complete -o nospace -o default -F hydra_bash_completion prunelab-train" in install.stdout


def test_report_export_and_reproduce_scripts(bin_dir, tmp_path):
    result = run(bin_dir, "prunelab-report", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: prunelab-report")
    result = run(bin_dir, "prunelab-export", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: prunelab-export")
    assert "--format {state_dict,torchscript,export,onnx,sparse}" in result.stdout
    result = run(bin_dir, "prunelab-reproduce", "--help")
    assert result.returncode == 0 and "--claims" in result.stdout
