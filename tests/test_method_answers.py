"""Each weight-level method against an answer computed here, independently of the method's code: the stored masks
must be exactly the survivors the paper's criterion picks from the stored weights. A flipped ranking, a wrong level
ladder, a missing ½, a wrong init or a density-changing shuffle makes one of these fail (tests/mutations.py plants
each and checks)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from foundations.errors import UserError
from foundations.seeds import REINIT_OFFSET, generator
from models import build_model
from models.config import ModelConfig
from runners.experiment import run_experiment
from runners.store import Store
from tests.conftest import make_run

# 16 inputs -> 12 -> 8 -> 4 classes: 192 + 96 + 32 = 320 prunable weights; 300 training examples, 6 batches/epoch.
SHAPE, CLASSES, WIDTHS = (1, 4, 4), 4, [12, 8]
TINY = [
    "dataset=synthetic",
    f"dataset.input_shape=[{','.join(map(str, SHAPE))}]",
    "dataset.num_train=400",
    "dataset.val_size=100",
    "dataset.num_test=100",
    "model=lenet300",
    f"model.widths=[{','.join(map(str, WIDTHS))}]",
    "train.epochs=2",
    "train.batch_size=50",
]
SIZES = {"fc1.weight": 16 * 12, "fc2.weight": 12 * 8, "fc3.weight": 8 * 4}
N = sum(SIZES.values())


def experiment(tmp_path, *overrides):
    config = make_run(tmp_path, *TINY, *overrides)
    store = Store(config.paths.results)
    return run_experiment(config, store), store, config


def stage(store, record, name, kind):
    return store.at(f"{kind}/{record['stage_hashes'][name]}")


def fresh_model(init: str = "kaiming_normal", seed: int = 0):
    return build_model(ModelConfig(name="lenet300", widths=WIDTHS, init=init), SHAPE, CLASSES, generator(seed))


def top(scores: dict, count: int, alive: dict | None = None, gap: float = 0.0) -> dict:
    """The ``count`` highest scores over all tensors (among ``alive``), by torch.topk. The cut must be unambiguous:
    the last kept score exceeds the first dropped one by a relative ``gap`` (float noise of another computation)."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten().double() for n in names])
    if alive is not None:
        flat = torch.where(torch.cat([alive[n].flatten() for n in names]), flat, torch.tensor(-math.inf))
    ordered = flat.sort(descending=True).values
    assert ordered[count - 1] > ordered[count] + gap * abs(ordered[count]), (
        "tie at the cut: the expected set is ambiguous"
    )
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, count).indices] = True
    out, start = {}, 0
    for n in names:
        out[n] = chosen[start : start + scores[n].numel()].view_as(scores[n])
        start += scores[n].numel()
    return out


def top_per_layer(scores: dict, fractions: dict, alive: dict) -> dict:
    return {n: top({n: scores[n]}, round(fractions[n] * scores[n].numel()), {n: alive[n]})[n] for n in scores}


def same(masks: dict, expected: dict) -> bool:
    return set(masks) == set(expected) and all(torch.equal(masks[n].bool(), expected[n].bool()) for n in expected)


def weights_abs(state: dict) -> dict:
    return {n: state[n].abs() for n in SIZES}


def counts(masks: dict) -> dict:
    return {n: int(m.sum()) for n, m in masks.items()}


# ------------------------------------------------------------------------------------------------- magnitude
def test_magnitude_keeps_the_top_abs_weights_of_every_round(tmp_path):
    record, store, _ = experiment(
        tmp_path, "method=magnitude", "method.sparsity=0.9", "method.rounds=2", "method.recovery.epochs=1"
    )
    alive = None
    for index, (source, keep) in enumerate([("dense", 0.1**0.5), ("recover1", 0.1)], start=1):
        trained = stage(store, record, source, "train").weights("last")  # prune_from=last: the end of training
        expected = top(weights_abs(trained), round(keep * N), alive)
        masks = stage(store, record, f"prune{index}", "prune").masks()
        assert same(masks, expected), f"round {index}"
        alive = masks
    assert record["density"] == pytest.approx(round(0.1 * N) / N)


def test_prune_from_selects_which_trained_weights_are_scored(tmp_path):
    args = [
        "method=magnitude",
        "method.sparsity=0.8",
        "method.recovery.epochs=1",
        "train.epochs=4",
        "train.eval_every=2",
    ]
    last, store, _ = experiment(tmp_path, *args)
    dense = stage(store, last, "dense", "train")
    assert dense.result["selected"]["iteration"] != dense.result["final"]["iteration"]  # else the test is vacuous
    selected, _, _ = experiment(tmp_path, *args, "method.prune_from=selected")
    for record, which in ((last, "last"), (selected, "selected")):
        expected = top(weights_abs(dense.weights(which)), round(0.2 * N))
        assert same(stage(store, record, "prune1", "prune").masks(), expected), which
    assert last["stage_hashes"]["prune1"] != selected["stage_hashes"]["prune1"]
    assert selected["label"] == "magnitude (prune selected)" and last["label"] == "magnitude"


def test_layerwise_std_uses_each_layers_quality_and_reports_the_achieved_sparsity(tmp_path):
    quality = {"fc1.weight": 0.5, "fc2.weight": 1.0, "fc3.weight": 0.25}
    spec = "{" + ",".join(f"{k}:{v}" for k, v in quality.items()) + "}"
    record, store, _ = experiment(
        tmp_path, "method=magnitude", "method.scope=layerwise_std", f"method.quality={spec}", "method.recovery.epochs=1"
    )
    trained = stage(store, record, "dense", "train").weights("last")
    masks = stage(store, record, "prune1", "prune").masks()
    for n, q in quality.items():  # Han et al. §3: keep |w| >= q_l · σ(W_l)
        assert torch.equal(masks[n], trained[n].abs().double() >= q * trained[n].double().std()), n
    kept = sum(int(m.sum()) for m in masks.values())
    assert record["achieved_sparsity"] == pytest.approx(1 - kept / N) and record["sparsity_set_by_method"] is True
    with pytest.raises(UserError, match="method.quality: a per-layer quality needs exactly the prunable tensors"):
        experiment(tmp_path, "method=magnitude", "method.scope=layerwise_std", "method.quality={fc1.weight:0.5}")


# ------------------------------------------------------------------------------------------------- lottery
def _keep_exponent(rates: dict, target: float) -> float:
    """x with Σ n_l (1 − r_l)^x = target · N, by bisection (the level of the adjusted last round)."""
    lo, hi = 0.0, 64.0
    for _ in range(200):
        mid = (lo + hi) / 2
        density = sum(SIZES[n] * (1 - rates[n]) ** mid for n in SIZES) / N
        lo, hi = (mid, hi) if density > target else (lo, mid)
    return hi


def test_lottery_levels_follow_the_per_layer_ladder_with_the_output_rate(tmp_path):
    rates = {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.25}  # the classifier at half the rate
    record, store, _ = experiment(
        tmp_path,
        "method=lottery",
        "method.scope=layerwise",
        "method.rate=0.5",
        "method.output_rate=0.25",
        "method.sparsity=0.8",
        "train.epochs=1",
    )
    # densities 0.525, 0.281, then the last level is solved to land on 0.2 exactly
    exponents = [1, 2, _keep_exponent(rates, 0.2)]
    assert [lvl["level"] for lvl in record["levels"]] == [1, 2, 3]
    alive = {n: torch.ones(SIZES[n], dtype=torch.bool) for n in SIZES}
    for level, exponent in enumerate(exponents, start=1):
        fractions = {n: (1 - rates[n]) ** exponent for n in SIZES}
        trained = stage(store, record, f"level{level - 1}", "train").weights("last")
        scores = {n: trained[n].abs().flatten() for n in SIZES}
        expected = top_per_layer(scores, fractions, {n: alive[n].flatten() for n in SIZES})
        masks = {n: m.flatten() for n, m in stage(store, record, f"prune{level}", "prune").masks().items()}
        assert same(masks, expected), f"level {level}"
        assert record["levels"][level - 1]["density"] == pytest.approx(sum(SIZES[n] * fractions[n] for n in SIZES) / N)
        assert counts(masks)["fc3.weight"] == round(0.75**exponent * 32)
        alive = masks
    assert record["density"] == pytest.approx(0.2, abs=1.5 / N)


def test_lottery_global_levels_keep_the_top_survivors(tmp_path):
    record, store, _ = experiment(
        tmp_path, "method=lottery", "method.rate=0.5", "method.sparsity=0.8", "train.epochs=1"
    )
    alive = None
    for level, keep in enumerate([0.5, 0.25, 0.2], start=1):
        trained = stage(store, record, f"level{level - 1}", "train").weights("last")
        expected = top(weights_abs(trained), round(keep * N), alive)
        masks = stage(store, record, f"prune{level}", "prune").masks()
        assert same(masks, expected), f"level {level}"
        alive = masks
    assert [round(lvl["density"], 6) for lvl in record["levels"]] == [0.5, 0.25, 0.2]


@pytest.mark.parametrize("rewind", [0, 3])
def test_lottery_reinit_control_is_a_fresh_init_trained_from_the_rewind_point(tmp_path, rewind):
    import yaml

    args = [
        "method=lottery",
        "method.rate=0.5",
        "method.sparsity=0.5",
        "train.epochs=1",
        f"method.rewind_iteration={rewind}",
    ]
    ticket, store, _ = experiment(tmp_path, *args)
    control, _, _ = experiment(tmp_path, *args, "method.control=reinit")
    fresh = stage(store, control, "reinit", "init").weights()
    expected = fresh_model(seed=0 + REINIT_OFFSET).state_dict()
    assert all(torch.equal(fresh[k], expected[k]) for k in expected)
    original = stage(store, ticket, "init", "init").weights()
    assert not torch.equal(fresh["fc1.weight"], original["fc1.weight"])
    trained = stage(store, control, "control", "train")
    assert same(trained.masks(), stage(store, ticket, "prune1", "prune").masks())
    spec = yaml.safe_load((trained.dir / "config.yaml").read_text())
    assert spec["spec"]["start_iteration"] == rewind and spec["parents"]["start"] == control["stage_hashes"]["reinit"]
    assert trained.result["iterations"] == 6  # one epoch of 6 batches: it resumes at k and ends where the ticket does


def test_lottery_shuffle_control_keeps_every_layers_density(tmp_path):
    args = [
        "method=lottery",
        "method.rate=0.5",
        "method.sparsity=0.75",
        "train.epochs=1",
        "method.scope=layerwise",
        "method.output_rate=0.25",
    ]
    record, store, _ = experiment(tmp_path, *args, "method.control=shuffle")
    ticket = stage(store, record, f"prune{len(record['levels'])}", "prune").masks()
    shuffled = stage(store, record, "shuffle", "prune").masks()
    assert counts(shuffled) == counts(ticket) and not same(shuffled, ticket)
    trained = stage(store, record, "control", "train")
    assert same(trained.masks(), shuffled) and trained.result["iterations"] == 6


def test_lottery_refuses_an_unreachable_target_in_one_line(tmp_path):
    # output_rate=0 keeps all 32 classifier weights: density never goes below 32/320
    with pytest.raises(UserError, match=r"^method.sparsity: 0.95 is unreachable"):
        experiment(tmp_path, "method=lottery", "method.scope=layerwise", "method.output_rate=0", "method.sparsity=0.95")
    assert not (tmp_path / "results" / "runs").exists()


# ------------------------------------------------------------------------------------------------- SNIP
def snip_expected(store, record, config, keep: float):
    """|∂L/∂w ⊙ w| on the first shuffled batch (seeds.prune) at the stored init, eval mode, by plain autograd."""
    from datasets import build_dataset

    init = stage(store, record, "init", "init").weights()
    model = fresh_model(config.model.init)
    model.load_state_dict(init)
    model.eval()
    data = build_dataset(config.dataset)
    x, y = next(iter(data.train.batches(100, shuffle=True, seed=config.seed_for("prune"))))
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), [params[n] for n in SIZES])
    scores = {n: (g * params[n]).abs().detach() for n, g in zip(SIZES, grads)}
    return top(scores, round(keep * N)), init


def test_snip_keeps_the_top_connection_sensitivities_at_the_variance_scaling_init(tmp_path):
    record, store, config = experiment(tmp_path, "method=snip", "method.sparsity=0.9", "model.init=variance_scaling")
    expected, init = snip_expected(store, record, config, keep=0.1)
    assert same(stage(store, record, "prune1", "prune").masks(), expected)
    reference = fresh_model("variance_scaling").state_dict()  # the documented init, drawn from seeds.init
    assert all(torch.equal(init[k], reference[k]) for k in reference)
    assert record["label"] == "snip"
    kaiming, _, _ = experiment(tmp_path, "method=snip", "method.sparsity=0.9")
    assert kaiming["label"] == "snip (kaiming_normal init)"


def test_snip_fresh_init_trains_a_new_draw_with_the_same_mask(tmp_path):
    args = ["method=snip", "method.sparsity=0.9", "model.init=variance_scaling"]
    scored, store, config = experiment(tmp_path, *args)
    record, _, _ = experiment(tmp_path, *args, "method.fresh_init=true")
    expected, init = snip_expected(store, record, config, keep=0.1)
    assert same(stage(store, record, "prune1", "prune").masks(), expected)
    fresh = stage(store, record, "fresh_init", "init").weights()
    reference = fresh_model("variance_scaling", seed=0 + REINIT_OFFSET).state_dict()
    assert all(torch.equal(fresh[k], reference[k]) for k in reference)
    assert not torch.equal(fresh["fc1.weight"], init["fc1.weight"])
    trained = stage(store, record, "train1", "train")
    assert trained.result["parents"]["start"] == record["stage_hashes"]["fresh_init"]
    assert same(trained.masks(), expected)
    assert record["stage_hashes"]["prune1"] == scored["stage_hashes"]["prune1"]  # one mask, two trainings


def test_the_surveys_snip_arm_uses_the_papers_init_and_the_other_arms_do_not(tmp_path):
    from runners.config import validate
    from tests.test_sweeps import compose

    for survey in ("survey_mlp", "survey_conv"):
        inits = {
            arm: validate(compose(tmp_path, f"+experiment={survey}", f"+experiment/arm={arm}", "level=0")).model.init
            for arm in ("snip", "magnitude", "random")
        }
        assert inits == {"snip": "variance_scaling", "magnitude": "kaiming_normal", "random": "kaiming_normal"}


@pytest.mark.parametrize(
    "args",
    [
        ["method=snip", "method.rounds=2"],
        ["method=magnitude", "method.when=init", "method.rounds=3"],
        ["method=random", "method.rounds=2"],
    ],
)
def test_iterative_pruning_at_init_is_refused(tmp_path, args):
    with pytest.raises(UserError, match=r"^method.rounds: pruning at initialization is one-shot"):
        make_run(tmp_path, *TINY, *args)


# ------------------------------------------------------------------------------------------------- OBD
def test_obd_scores_are_half_the_hessian_diagonal_times_w_squared(tmp_path):
    from datasets import build_dataset

    record, store, config = experiment(
        tmp_path, "method=obd", "method.sparsity=0.8", "method.samples=64", "method.recovery.epochs=1"
    )
    trained = stage(store, record, "dense", "train").weights("last")
    model = fresh_model().double()
    model.load_state_dict({k: v.double() for k, v in trained.items()})
    model.eval()
    batches = build_dataset(config.dataset).train.subset(64, config.seed_for("prune")).batches(64)
    x, y = (torch.cat(t) for t in zip(*batches))
    x = x.double()
    fixed = {k: v for k, v in model.state_dict().items() if k not in SIZES}

    def loss(flat):
        weights, start = {}, 0
        for n, size in SIZES.items():
            weights[n] = flat[start : start + size].view_as(trained[n])
            start += size
        return F.cross_entropy(functional_call(model, {**fixed, **weights}, (x,)), y)

    theta = torch.cat([trained[n].double().flatten() for n in SIZES])
    h = torch.autograd.functional.hessian(loss, theta).diagonal()  # the full Hessian of the mean loss
    saliency = 0.5 * h * theta.square()  # LeCun et al. 1990, eq. 5
    split = dict(zip(SIZES, saliency.split(list(SIZES.values()))))
    scores = {n: split[n].view_as(trained[n]) for n in SIZES}
    expected = top(scores, round(0.2 * N), gap=1e-4)
    assert same(stage(store, record, "prune1", "prune").masks(), expected)
    removed = torch.cat([~expected[n].flatten() for n in SIZES])
    predicted = record["rounds"][0]["predicted_loss_increase"]
    assert predicted == pytest.approx(float(saliency[removed].sum()), rel=1e-4)


# ------------------------------------------------------------------------------------------------- random
def test_random_layerwise_keeps_exact_per_layer_counts_and_depends_on_the_prune_seed(tmp_path):
    first, store, _ = experiment(tmp_path, "method=random", "method.sparsity=0.75")
    other, _, _ = experiment(tmp_path, "method=random", "method.sparsity=0.75", "seeds.prune=7")
    masks = stage(store, first, "prune1", "prune").masks()
    assert counts(masks) == {n: round(0.25 * size) for n, size in SIZES.items()}
    assert not same(masks, stage(store, other, "prune1", "prune").masks())


def test_random_global_keeps_the_exact_total(tmp_path):
    record, store, _ = experiment(tmp_path, "method=random", "method.variant=global", "method.sparsity=0.75")
    masks = stage(store, record, "prune1", "prune").masks()
    assert sum(counts(masks).values()) == round(0.25 * N)
    assert counts(masks) != {n: round(0.25 * size) for n, size in SIZES.items()}  # global: layers differ


def test_random_shuffle_keeps_every_layers_density_of_its_source(tmp_path):
    source = [
        "method=random",
        "method.variant=shuffle",
        "+method.source.name=magnitude",
        "+method.source.sparsity=0.8",
        "+method.source.recovery.epochs=1",
    ]
    record, store, _ = experiment(tmp_path, *source)
    shuffled = stage(store, record, "prune1", "prune").masks()
    magnitude = store.at(
        next(
            r.parent.parent.name + "/" + r.parent.name
            for r in (tmp_path / "results" / "runs" / "experiment").glob("*/result.json")
            if '"method": "magnitude"' in r.read_text()
        )
    )
    source_masks = store.at(magnitude.result["final_stage"]).masks()
    assert counts(shuffled) == counts(source_masks) and not same(shuffled, source_masks)
    spec = store.at(f"prune/{record['stage_hashes']['prune1']}")
    assert (spec.dir / "config.yaml").read_text().count(magnitude.result["final_stage"]) == 1


def test_random_shuffle_refuses_a_structured_source_and_repeated_rounds(tmp_path):
    with pytest.raises(UserError, match=r"^method.source: slimming prunes channels"):
        experiment(tmp_path, "method=random", "method.variant=shuffle", "+method.source.name=slimming")
    assert not (tmp_path / "results" / "runs").exists()  # refused before the source was built
    with pytest.raises(UserError, match=r"^method.rounds: variant=shuffle permutes another experiment's mask once"):
        make_run(
            tmp_path,
            *TINY,
            "method=random",
            "method.variant=shuffle",
            "method.when=after_training",
            "+method.source.name=snip",
            "method.rounds=2",
        )
