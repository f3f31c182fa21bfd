"""Every config field that changes a result is in the hash of a stage; nothing declared result-neutral is.

For every method and every leaf field of its ``Config``, the experiment is run twice on a tiny setup — as configured
and with that one field flipped — and the stage hashes of the two records are compared: a flip must change at least
one stage hash unless the field is in the method's declared ``neutral_fields()`` (then it must change none). A field
the table below does not know fails the test, so a new field cannot slip in unhashed. (The experiment record's own
hash always changes, since it covers the whole method config; it is not a stage the next experiment reuses.)
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest

from foundations.errors import UserError
from foundations.store import Store
from methods import get_method, registry
from runners.experiment import run_experiment
from tests.conftest import TINY_MLP_BN, make_run

# mlp_bn 16 -> 6 -> 5 -> 4 (BN after each hidden layer: slimming and prunable.batchnorm have something to act on)
TINY = [
    *TINY_MLP_BN,
    "train.epochs=1",
    "train.batch_size=40",
]
BASE = {  # per method: what keeps the run small
    "obd": ["method.samples=32"],
    "snip": ["method.batch_size=16"],
    "grasp": ["method.samples_per_class=4"],
    "synflow": ["method.iterations=2"],
    "thinet": ["method.n_images=16", "method.batch_size=16"],
    "scratch": ["+method.source_overrides.recovery.epochs=1"],
    "gmp": ["method.frequency=1", "method.training.epochs=4"],  # 8 steps: updates at 2, 3, 4, 5, 6
}
RECOVERY = {
    "recovery.epochs": ([], ["method.recovery.epochs=2"]),
    "recovery.lr": ([], ["method.recovery.lr=0.02"]),
    "recovery.lr_scale": ([], ["method.recovery.lr_scale=0.2"]),
    "recovery.schedule": ([], ["method.recovery.schedule=constant"]),
    "recovery.milestones": ([], ["method.recovery.milestones=[0.5]"]),
    # a rewinding protocol retrains at most the dense schedule's 1 epoch
    "recovery.protocol": (["method.recovery.epochs=1"], ["method.recovery.protocol=lr_rewind"]),
}
COMMON = {
    "sparsity": ([], ["method.sparsity=0.6"]),
    "prunable.biases": ([], ["method.prunable.biases=true"]),
    "prunable.batchnorm": ([], ["method.prunable.batchnorm=true"]),
    "prunable.classifier": ([], ["method.prunable.classifier=false"]),
    "prunable.exclude": ([], ["method.prunable.exclude=[fc1]"]),
}
INIT = ["method.when=init"]
AT_INIT = {  # Frankle et al. 2021's ablations and the collapse measure, options of every method pruning at init
    "shuffle": (INIT, ["method.shuffle=true"]),
    "fresh_init": (INIT, ["method.fresh_init=true"]),
    "invert": (INIT, ["method.invert=true"]),
    "measure_collapse": (INIT, ["method.measure_collapse=true"]),
}
# N:M needs every pruned layer's input to tile into groups of M: fc1 has 16 inputs (fc2 6, fc3 5 are left dense)
NM = (["method.sparsity=0.5", "method.prunable.exclude=[fc2,fc3]"], ["method.pattern=2:4"])
SCORE = {
    **COMMON,
    "pattern": NM,
    **RECOVERY,
    **AT_INIT,
    "scope": ([], ["method.scope=layerwise"]),
    "rounds": ([], ["method.rounds=2"]),
    "layer_density": ([], ["+method.layer_density={fc1.weight:0.5}"]),
    "quality": (["method.scope=layerwise_std", "method.quality=0.5"], ["method.quality=1.0"]),
    "when": ([], ["method.when=init"]),
    "prune_from": ([], ["method.prune_from=selected"]),
    "recalibrate_bn": ([], ["method.recalibrate_bn=2"]),  # 2 batches of 40: the whole 80-image train split
}
CHANNEL = {
    **COMMON,
    **{k: v for k, v in RECOVERY.items() if k != "recovery.protocol"},
    "scope": ([], ["method.scope=global"]),
    "min_keep_fraction": ([], ["method.min_keep_fraction=0.4"]),
}
AFTER = ["method.when=after_training"]  # random prunes at init by default; these fields act after training
SHUFFLE = [
    "method.variant=shuffle",
    "+method.source.name=snip",
    "+method.source.sparsity=0.5",
    "+method.source.batch_size=16",
]
SCRATCH_B = ["method.budget=B", "train.epochs=3"]
FLIPS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "dense": COMMON,
    "magnitude": SCORE,
    "obd": {
        **SCORE,
        "estimator": ([], ["method.estimator=mc_fisher"]),
        "samples": ([], ["method.samples=16"]),
        "probes": (["method.estimator=hutchinson"], ["method.probes=3"]),
    },
    "snip": {
        **{k: v for k, v in SCORE.items() if k not in ("when", "rounds")},
        "batch_size": ([], ["method.batch_size=8"]),
        "batches": ([], ["method.batches=2"]),
        "fresh_init": ([], ["method.fresh_init=true"]),
    },
    "synflow": {
        **{k: v for k, v in SCORE.items() if k not in ("when", "rounds")},
        "iterations": ([], ["method.iterations=3"]),
        "precision": ([], ["method.precision=float32"]),
    },
    "grasp": {
        **{k: v for k, v in SCORE.items() if k not in ("when", "rounds")},
        "samples_per_class": ([], ["method.samples_per_class=2"]),
        "temperature": ([], ["method.temperature=1.0"]),
        "variant": ([], ["method.variant=abs"]),
        "bn_mode": ([], ["method.bn_mode=eval"]),
        "reinit_linear": ([], ["method.reinit_linear=false"]),
    },
    "random": {
        **SCORE,
        **{k: (AFTER + context, v) for k, (context, v) in RECOVERY.items()},
        "scope": ([], ["method.scope=global"]),
        "quality": ([], ["method.quality=1.0"]),
        "when": ([], ["method.when=after_training"]),
        "prune_from": (AFTER, ["method.prune_from=selected"]),
        "rounds": (AFTER, ["method.rounds=2"]),
        "variant": ([], ["method.variant=global"]),
        "source": (SHUFFLE, ["method.source.sparsity=0.6"]),
        "build_source": (SHUFFLE, ["method.build_source=false"]),
    },
    "lottery": {
        **COMMON,
        "rate": ([], ["method.rate=0.5"]),
        "output_rate": (["method.scope=layerwise", "method.output_rate=0.1"], ["method.output_rate=0.3"]),
        "scope": ([], ["method.scope=layerwise"]),
        "rewind_iteration": ([], ["method.rewind_iteration=1"]),
        "control": ([], ["method.control=reinit"]),
        "pattern": NM,
    },
    "slimming": {
        **CHANNEL,
        "scope": ([], ["method.scope=layerwise"]),
        "lam": ([], ["method.lam=0.01"]),
        "bn_weight_init": ([], ["method.bn_weight_init=1.0"]),
        "fine_tune": ([], ["method.fine_tune=rethinking"]),
        "passes": ([], ["method.passes=2"]),
    },
    "thinet": {
        **{k: v for k, v in CHANNEL.items() if k != "scope"},
        "n_images": ([], ["method.n_images=8"]),
        "locations_per_image": ([], ["method.locations_per_image=3"]),
        "rescale": ([], ["method.rescale=false"]),
        "selection": ([], ["method.selection=greedy_keep"]),
        "layers": ([], ["method.layers=[fc1]"]),
        "layer_fine_tune_epochs": ([], ["method.layer_fine_tune_epochs=0"]),
        "layer_fine_tune_iterations": ([], ["method.layer_fine_tune_iterations=1"]),
        "layer_fine_tune_lr_scale": ([], ["method.layer_fine_tune_lr_scale=0.5"]),
        "batch_size": ([], ["method.batch_size=8"]),
    },
    "l1_filter": {
        **CHANNEL,
        "scope": ([], ["method.scope=global"]),
        "tied_groups": ([], ["method.tied_groups=first_layer"]),
    },
    "random_channel": CHANNEL,
    "gmp": {
        **COMMON,
        "initial_sparsity": ([], ["method.initial_sparsity=0.3"]),
        "start": ([], ["method.start=0.4"]),
        "end": ([], ["method.end=0.9"]),
        "frequency": ([], ["method.frequency=2"]),
        "scope": ([], ["method.scope=global"]),
        "train_from": ([], ["method.train_from=dense"]),
        "training.epochs": ([], ["method.training.epochs=3"]),
        "training.lr": ([], ["method.training.lr=0.02"]),
        "training.lr_scale": ([], ["method.training.lr_scale=0.2"]),
        "training.schedule": ([], ["method.training.schedule=constant"]),
        "training.milestones": ([], ["method.training.milestones=[0.5]"]),
    },
    "scratch": {
        **COMMON,
        "source": ([], ["method.source=random"]),
        "source_overrides": ([], ["method.source_overrides.recovery.epochs=2"]),
        "budget": ([], ["method.budget=B"]),
        "epochs": ([], ["method.epochs=2"]),
        "budget_cap": (SCRATCH_B, ["method.budget_cap=1.5"]),
        # contexts where the choice moves the length: 3 · 146/58 = 7.55 epochs, and 10.28 vs 10.58
        "epochs_rounding": (
            SCRATCH_B + ["method.sparsity=0.6", "method.flops=conv_linear"],
            ["method.epochs_rounding=floor"],
        ),
        "reinit_seed": ([], ["method.reinit_seed=5"]),
        "build_source": ([], ["method.build_source=false"]),
        "flops": (["method.budget=B", "train.epochs=5", "method.source=random_channel"], ["method.flops=conv_linear"]),
    },
}
CHANNEL_METHODS = ("l1_filter", "random_channel", "slimming", "thinet")
# Fields with no valid other value for the method: the flip must be refused in one line.
FIXED = {
    ("snip", "when"): ["method.when=after_training"],
    ("snip", "rounds"): ["method.rounds=2"],
    ("synflow", "when"): ["method.when=after_training"],
    ("synflow", "rounds"): ["method.rounds=2"],
    ("grasp", "when"): ["method.when=after_training"],
    ("grasp", "rounds"): ["method.rounds=2"],
    ("thinet", "scope"): ["method.scope=global"],
    ("gmp", "training.protocol"): ["method.training.protocol=lr_rewind"],
    **{(m, "recovery.protocol"): ["method.recovery.protocol=lr_rewind"] for m in CHANNEL_METHODS},
}


def leaf_fields(cls, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        value = getattr(cls(), f.name)
        out += leaf_fields(type(value), f"{prefix}{f.name}.") if is_dataclass(value) else [prefix + f.name]
    return out


def stage_hashes(tmp_path, method: str, *overrides: str) -> dict[str, str]:
    config = make_run(tmp_path, *TINY, f"method={method}", *BASE.get(method, []), *overrides)
    return run_experiment(config, Store(config.paths.results))["stage_hashes"]


def test_every_field_of_every_method_has_a_flip_or_is_fixed():
    for name, method in registry().items():
        known = set(FLIPS[name]) | {f for m, f in FIXED if m == name} | {"name"}
        missing = [f for f in leaf_fields(method.Config) if f not in known]
        assert not missing, f"{name}: add a flip to tests/test_hashes.py for {missing}"
        assert method.neutral_fields() <= set(leaf_fields(method.Config)), name


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(FLIPS))
def test_flipping_a_field_changes_a_stage_hash_unless_declared_neutral(tmp_path, method):
    cls = get_method(method)
    neutral = cls.neutral_fields()
    wrong = []
    for field in leaf_fields(cls.Config):
        if field == "name":
            continue
        if (method, field) in FIXED:
            with pytest.raises(UserError, match=f"method.{field}"):
                make_run(tmp_path, *TINY, f"method={method}", *FIXED[(method, field)])
            continue
        context, flip = FLIPS[method][field]
        before = stage_hashes(tmp_path, method, *context)
        after = stage_hashes(tmp_path, method, *context, *flip)
        if (before != after) == (field in neutral):
            wrong.append(
                f"{field} ({'declared neutral but changes a hash' if field in neutral else 'changes no hash'})"
            )
    assert not wrong, f"{method}: {wrong}"


def test_the_cpu_thread_count_is_hashed_unless_it_is_the_default_one(tmp_path):
    """Threads change the numbers (parallel sums in another order), so a count other than the default 1 is in every
    stage's hash and the experiment's; run_experiment runs on the count the hash names."""
    import torch

    before = torch.get_num_threads()
    try:
        default, one = stage_hashes(tmp_path, "dense"), stage_hashes(tmp_path, "dense", "threads=1")
        two = stage_hashes(tmp_path, "dense", "threads=2")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert default == one
    assert all(two[name] != one[name] for name in one)
