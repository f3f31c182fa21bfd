import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(
    not os.path.exists(FMNIST), reason="Debian package dataset-fashion-mnist not installed"
)


def make_run(tmp_path, *overrides):
    """A validated ExperimentConfig composed exactly as the CLI does."""
    from hydra import compose, initialize_config_dir

    from runners.config import register_schemas, validate

    register_schemas()
    conf = os.path.join(os.path.dirname(__file__), "..", "conf")
    with initialize_config_dir(config_dir=os.path.abspath(conf), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["logger=none", "progress=false", f"paths.results={tmp_path}/results", *overrides],
            return_hydra_config=False,
        )
    return validate(cfg)


SYNTH = ["dataset=synthetic", "model=lenet300", "train.epochs=2", "train.batch_size=64"]
