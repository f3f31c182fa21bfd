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
from foundations.store import Store
from models import build_model
from models.config import ModelConfig
from runners.experiment import run_experiment
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
    assert (
        dense.result_json["selected"]["iteration"] != dense.result_json["final"]["iteration"]
    )  # else the test is vacuous
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
    assert [lvl["level"] for lvl in record["outputs"]["levels"]] == [1, 2, 3]
    alive = {n: torch.ones(SIZES[n], dtype=torch.bool) for n in SIZES}
    for level, exponent in enumerate(exponents, start=1):
        fractions = {n: (1 - rates[n]) ** exponent for n in SIZES}
        trained = stage(store, record, f"level{level - 1}", "train").weights("last")
        scores = {n: trained[n].abs().flatten() for n in SIZES}
        expected = top_per_layer(scores, fractions, {n: alive[n].flatten() for n in SIZES})
        masks = {n: m.flatten() for n, m in stage(store, record, f"prune{level}", "prune").masks().items()}
        assert same(masks, expected), f"level {level}"
        assert record["outputs"]["levels"][level - 1]["density"] == pytest.approx(
            sum(SIZES[n] * fractions[n] for n in SIZES) / N
        )
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
    assert [round(lvl["density"], 6) for lvl in record["outputs"]["levels"]] == [0.5, 0.25, 0.2]


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
    assert (
        trained.result_json["iterations"] == 6
    )  # one epoch of 6 batches: it resumes at k and ends where the ticket does


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
    ticket = stage(store, record, f"prune{len(record['outputs']['levels'])}", "prune").masks()
    shuffled = stage(store, record, "shuffle", "prune").masks()
    assert counts(shuffled) == counts(ticket) and not same(shuffled, ticket)
    trained = stage(store, record, "control", "train")
    assert same(trained.masks(), shuffled) and trained.result_json["iterations"] == 6


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
    assert trained.result_json["parents"]["start"] == record["stage_hashes"]["fresh_init"]
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
    predicted = record["outputs"]["rounds"][0]["predicted_loss_increase"]
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
    source_masks = store.at(magnitude.result_json["final_stage"]).masks()
    assert counts(shuffled) == counts(source_masks) and not same(shuffled, source_masks)
    spec = store.at(f"prune/{record['stage_hashes']['prune1']}")
    assert (spec.dir / "config.yaml").read_text().count(magnitude.result_json["final_stage"]) == 1


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


# ------------------------------------------------------------------------------------------------- SynFlow
def synflow_closed_form(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """S_l[i, j] = (1ᵀ|W_L|…|W_{l+1}|)_i |W_l[i, j]| (|W_{l−1}|…|W_1| 1)_j: the path products through each weight of
    a bias-free ReLU MLP on an all-ones input (every activation is positive, so ReLU passes everything)."""
    a = [w.double().abs() for w in weights]
    forward = [torch.ones(a[0].shape[1], dtype=torch.float64)]
    for w in a[:-1]:
        forward.append(w @ forward[-1])
    backward = [torch.ones(a[-1].shape[0], dtype=torch.float64)]
    for w in reversed(a[1:]):
        backward.insert(0, w.T @ backward[0])
    return [torch.outer(b, f) * w for b, f, w in zip(backward, forward, a)]


@pytest.mark.parametrize("iterations", [1, 4])
def test_synflow_keeps_the_top_path_products_over_its_exponential_schedule(tmp_path, iterations):
    record, store, _ = experiment(tmp_path, "method=synflow", "method.sparsity=0.9", f"method.iterations={iterations}")
    init = stage(store, record, "init", "init").weights()
    assert all(float(init[n.replace("weight", "bias")].abs().max()) == 0 for n in SIZES)  # zero biases: exact
    alive = {n: torch.ones_like(init[n], dtype=torch.bool) for n in SIZES}
    for k in range(1, iterations + 1):
        scores = synflow_closed_form([init[n] * alive[n] for n in SIZES])
        alive = top(dict(zip(SIZES, scores)), round(0.1 ** (k / iterations) * N), alive, gap=1e-9)
    assert same(stage(store, record, "prune1", "prune").masks(), alive)
    assert record["density"] == pytest.approx(round(0.1 * N) / N)
    assert record["label"] == ("synflow" if iterations == 100 else f"synflow ({iterations} iterations)")


# ------------------------------------------------------------------------------------------------- GraSP
def grasp_expected(store, record, config, keep: float, variant: str, reinit: bool):
    """−θ⊙Hg by torch.autograd.functional.hvp on the Xavier-redrawn copy (drawn from seeds.prune in module order),
    on the first 10 images of each class in the shuffled training split, as two halves; keep the lowest."""
    from datasets import build_dataset

    model = fresh_model()
    model.load_state_dict(stage(store, record, "init", "init").weights())
    if reinit:
        gen = generator(config.seed_for("prune"))
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    torch.nn.init.xavier_normal_(module.weight, generator=gen)
    data = build_dataset(config.dataset)
    seen: dict[int, list] = {c: [] for c in range(CLASSES)}
    for xb, yb in data.train.batches(13, shuffle=True, seed=config.seed_for("prune")):
        for x1, y1 in zip(xb, yb.tolist()):
            seen[y1] += [x1] if len(seen[y1]) < 10 else []
    x = torch.stack([im for c in range(CLASSES) for im in seen[c]])
    y = torch.arange(CLASSES).repeat_interleave(10)
    fixed = {k: v for k, v in model.state_dict().items() if k not in SIZES}
    theta = torch.cat([model.state_dict()[n].flatten() for n in SIZES])

    def loss(flat):
        parts, start = {}, 0
        for n, size in SIZES.items():
            parts[n] = flat[start : start + size].view(model.state_dict()[n].shape)
            start += size
        out = functional_call(model, {**fixed, **parts}, (x,)) / 200
        return F.cross_entropy(out[:20], y[:20]) + F.cross_entropy(out[20:], y[20:])

    leaf = theta.clone().requires_grad_(True)
    g = torch.autograd.grad(loss(leaf), leaf)[0]
    hg = torch.autograd.functional.hvp(loss, theta, g)[1]
    removal = -theta * hg  # eq. 8: remove the largest
    ranking = removal.abs() if variant == "abs" else -removal
    split = dict(zip(SIZES, ranking.split(list(SIZES.values()))))
    return top({n: split[n].view_as(model.state_dict()[n]) for n in SIZES}, round(keep * N), gap=1e-6)


@pytest.mark.parametrize("variant,reinit", [("official", True), ("abs", True), ("official", False)])
def test_grasp_removes_the_largest_minus_theta_hg(tmp_path, variant, reinit):
    args = ["method=grasp", "method.sparsity=0.8", f"method.variant={variant}", f"method.reinit_linear={reinit}"]
    record, store, config = experiment(tmp_path, *args)
    expected = grasp_expected(store, record, config, 0.2, variant, reinit)
    assert same(stage(store, record, "prune1", "prune").masks(), expected)


def test_grasp_scores_a_train_mode_copy_and_leaves_the_real_bn_statistics_alone(tmp_path):
    args = ["method=grasp", "model=mlp_bn", "method.sparsity=0.8"]
    train_mode, store, _ = experiment(tmp_path, *args)
    init = stage(store, train_mode, "init", "init").weights()
    pruned = stage(store, train_mode, "prune1", "prune").weights()
    buffers = [k for k in init if "running" in k or "num_batches" in k]
    assert buffers and all(torch.equal(init[k], pruned[k]) for k in buffers)
    eval_mode, _, _ = experiment(tmp_path, *args, "method.bn_mode=eval")
    masks = stage(store, eval_mode, "prune1", "prune").masks()
    assert not same(masks, stage(store, train_mode, "prune1", "prune").masks())  # the mode matters on a BN net
    assert eval_mode["label"] == "grasp (eval-mode BN)" and train_mode["label"] == "grasp"


# ------------------------------------------------------------------------------------------------- Frankle et al. 2021
AT_INIT = {
    "snip": ["method=snip"],
    "grasp": ["method=grasp"],
    "synflow": ["method=synflow", "method.iterations=3"],
    "random": ["method=random", "method.variant=global"],
    "magnitude": ["method=magnitude", "method.when=init"],
}


@pytest.mark.parametrize("method", list(AT_INIT))
def test_shuffle_keeps_every_layers_count_and_trains_the_permuted_mask_on_the_same_init(tmp_path, method):
    args = [*AT_INIT[method], "method.sparsity=0.8"]
    plain, store, _ = experiment(tmp_path, *args)
    record, _, _ = experiment(tmp_path, *args, "method.shuffle=true")
    assert record["stage_hashes"]["prune1"] == plain["stage_hashes"]["prune1"]  # the method's own mask, shared
    original = stage(store, record, "prune1", "prune").masks()
    mixed = stage(store, record, "shuffle", "prune")
    assert counts(mixed.masks()) == counts(original) and not same(mixed.masks(), original)
    init = stage(store, record, "init", "init").weights()
    assert all(torch.equal(mixed.weights()[n], init[n] * mixed.masks()[n]) for n in SIZES)
    trained = stage(store, record, "train1", "train")
    assert trained.result_json["parents"]["start"] == mixed.hash and same(trained.masks(), mixed.masks())
    assert "shuffled" in record["label"]


def test_the_shuffle_ablation_is_randoms_shuffle_of_the_same_experiment(tmp_path):
    snip = ["method=snip", "method.sparsity=0.8", "method.batch_size=20"]
    ablation, store, _ = experiment(tmp_path, *snip, "method.shuffle=true")
    shuffle = [
        "method=random",
        "method.variant=shuffle",
        "+method.source.name=snip",
        "+method.source.sparsity=0.8",
        "+method.source.batch_size=20",
    ]
    record, _, _ = experiment(tmp_path, *shuffle)
    assert same(stage(store, record, "prune1", "prune").masks(), stage(store, ablation, "shuffle", "prune").masks())


@pytest.mark.parametrize("method", ["grasp", "synflow", "random"])
def test_fresh_init_trains_the_same_mask_from_a_new_draw(tmp_path, method):
    args = [*AT_INIT[method], "method.sparsity=0.8"]
    plain, store, _ = experiment(tmp_path, *args)
    record, _, _ = experiment(tmp_path, *args, "method.fresh_init=true")
    assert record["stage_hashes"]["prune1"] == plain["stage_hashes"]["prune1"]
    fresh = stage(store, record, "fresh_init", "init").weights()
    reference = fresh_model(seed=0 + REINIT_OFFSET).state_dict()
    assert all(torch.equal(fresh[k], reference[k]) for k in reference)
    trained = stage(store, record, "train1", "train")
    assert trained.result_json["parents"]["start"] == record["stage_hashes"]["fresh_init"]
    assert same(trained.masks(), stage(store, plain, "prune1", "prune").masks())
    assert "fresh init" in record["label"]


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude"])
def test_invert_keeps_the_complement_of_the_ranking(tmp_path, method):
    args = [*AT_INIT[method], "method.iterations=1"] if method == "synflow" else AT_INIT[method]
    plain, store, _ = experiment(tmp_path, *args, "method.sparsity=0.3")  # keeps 224 of 320
    inverted, _, _ = experiment(tmp_path, *args, "method.sparsity=0.7", "method.invert=true")  # keeps the other 96
    top_masks = stage(store, plain, "prune1", "prune").masks()
    low_masks = stage(store, inverted, "prune1", "prune").masks()
    assert all(torch.equal(low_masks[n], ~top_masks[n]) for n in SIZES)
    assert "inverted" in inverted["label"]


def test_the_ablations_are_refused_after_training(tmp_path):
    for flag in ("shuffle", "fresh_init", "invert", "measure_collapse"):
        with pytest.raises(UserError, match=rf"^method.{flag}: an ablation .* set method.when=init"):
            make_run(tmp_path, *TINY, "method=magnitude", f"method.{flag}=true")
    with pytest.raises(UserError, match=r"^method.invert: variant=shuffle takes another experiment's mask"):
        make_run(
            tmp_path, *TINY, "method=random", "method.variant=shuffle", "+method.source.name=snip", "method.invert=true"
        )


# ------------------------------------------------------------------------------------------------- layer collapse
def test_layer_collapse_and_critical_compression_in_the_record(tmp_path):
    # SynFlow single-shot on the tiny net: critical compression from the rank of the weakest layer's best weight
    record, store, _ = experiment(
        tmp_path, "method=synflow", "method.iterations=1", "method.sparsity=0.99", "method.measure_collapse=true"
    )
    init = stage(store, record, "init", "init").weights()
    scores = synflow_closed_form([init[n] for n in SIZES])
    flat = torch.cat([s.flatten() for s in scores])
    needed = max(int((flat >= s.max()).sum()) for s in scores)
    grid = [10 ** (k / 4) for k in range(8) if 10 ** (k / 4) <= N / 3]  # N / L = 106.7
    assert record["outputs"]["critical_compression"] == pytest.approx(max(r for r in grid if round(N / r) >= needed))
    masks = stage(store, record, "prune1", "prune").masks()
    assert record["outputs"]["layer_collapse"] == any(int(m.sum()) == 0 for m in masks.values())
    plain, _, _ = experiment(tmp_path, "method=synflow", "method.iterations=1", "method.sparsity=0.99")
    assert plain["outputs"]["critical_compression"] is None and plain["stage_hashes"] == record["stage_hashes"]
    assert plain["outputs"]["layer_collapse"] == record["outputs"]["layer_collapse"]


def test_the_shuffle_stage_follows_its_mask(tmp_path):
    # two targets in one store: each shuffle permutes its own mask (the stage hashes the mask it permutes)
    for sparsity in (0.8, 0.5):
        record, store, _ = experiment(tmp_path, "method=snip", f"method.sparsity={sparsity}", "method.shuffle=true")
        original = stage(store, record, "prune1", "prune").masks()
        assert counts(stage(store, record, "shuffle", "prune").masks()) == counts(original)
        assert record["density"] == pytest.approx(round((1 - sparsity) * N) / N)
