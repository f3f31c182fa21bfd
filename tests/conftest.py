import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(
    not os.path.exists(FMNIST), reason="Debian package dataset-fashion-mnist not installed"
)


# mlp_bn 16 -> 6 -> 5 -> 4 on 120 synthetic images (80 train, 40 val, 40 test): the network and data of the tests that
# count by hand (BN statistics, budgets, hash flips); each adds its own training fields
TINY_MLP_BN = [
    "dataset=synthetic",
    "dataset.input_shape=[1,4,4]",
    "dataset.num_train=120",
    "dataset.val_size=40",
    "dataset.num_test=40",
    "model=mlp_bn",
    "model.widths=[6,5]",
]


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


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and unused) under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs ``-n 2 --dist loadgroup`` (the Makefile says why); with loadgroup, xdist 3.8 puts a crashed
    worker's unfinished work back in the queue *with the test that crashed it*, which then crashes the next worker
    and the session never ends. This scheduler reports that test as the crash (a failure by name) and re-queues only
    the rest, as ``--dist load`` does. Other modes: xdist's own scheduler."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling  # only ever called by xdist itself

    class CrashedTestRunsOnce(LoadGroupScheduling):
        def remove_node(self, node):
            workload = self.assigned_work.pop(node)
            unfinished = [(scope, test) for scope, unit in workload.items() for test, done in unit.items() if not done]
            if not unfinished:
                return None
            scope, crashed = unfinished[0]  # a worker runs its units and their tests in order
            workload[scope][crashed] = True
            self.workqueue.update({s: unit for s, unit in workload.items() if not all(unit.values())})
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

    return CrashedTestRunsOnce(config, log)
