"""Hyperparameters calibrated on the validation split: the selection rules, and the report's tables of their grids.

Two rules, each on per-seed measurements of one grid (``runners.calibrate`` runs the grids through the store and
writes ``<paths.results>/calibration/<name>.json``; this module only reads numbers):

- **Slimming's λ** (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming", §4.3: λ
  chosen by a grid search on a validation split; their VGGNet loses 0.47 pp to sparsity training): the *largest* λ
  of the grid whose sparsity training costs at most ``tolerance`` (0.5 pp) of validation accuracy against the dense
  model, the cost being the mean over seeds of the paired differences dense − sparsity-trained (one seed = one
  dense model, one data order). None qualifies: no λ is chosen and the file says so (λ = 0 would silently turn
  slimming into plain training with a γ threshold; the user decides).
- **The fine-tuning LR** (``method.recovery.lr_scale``; Wang et al. 2023 and Blalock et al. 2020: an untuned
  fine-tuning LR decides most orderings): the value with the highest mean validation accuracy after recovery; on a
  tie, the smaller scale (the grid's order does not matter).

Test accuracies are carried along and shown, never used to choose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from foundations.errors import UserError

TOLERANCE = 0.005  # 0.5 pp: Liu et al.'s VGGNet lost 0.47 pp of accuracy to sparsity training (93.77 → 93.30 %)
LAM = "slimming_lam"
LR_SCALE = "fine_tune_lr_scale"
_DIGITS = 9  # accuracies are counts / split size: a cost of exactly 0.5 pp must compare equal to 0.005


@dataclass(frozen=True)
class Measurement:
    """One seed at one grid value: the validation and test accuracy of the trained (or recovered) model, and of the
    same seed's dense model."""

    seed: int
    val_acc: float
    test_acc: float
    dense_val_acc: float
    dense_test_acc: float


@dataclass(frozen=True)
class Point:
    """One grid value with its seeds, and what the rule made of them."""

    value: float
    runs: tuple[Measurement, ...]
    score: float  # λ: mean validation cost (dense − trained); lr_scale: mean validation accuracy
    qualifies: bool  # λ: cost within the tolerance; lr_scale: True


@dataclass(frozen=True)
class Choice:
    value: Optional[float]  # None: no grid value satisfies the rule
    points: tuple[Point, ...]  # in increasing value
    rule: str
    message: str


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _paired(grid: dict[float, list[Measurement]], what: str) -> list[tuple[float, tuple[Measurement, ...]]]:
    """The grid in increasing value, each point's runs by seed; every point needs the same seeds (paired)."""
    if not grid:
        raise UserError(f"{what}: the grid is empty; give at least one value")
    seeds = {frozenset(m.seed for m in runs) for runs in grid.values()}
    if len(seeds) != 1 or not next(iter(seeds)):
        by_value = {v: sorted(m.seed for m in runs) for v, runs in sorted(grid.items())}
        raise UserError(f"{what}: every grid value needs the same seeds, paired (got {by_value}); re-run the missing")
    return [(v, tuple(sorted(grid[v], key=lambda m: m.seed))) for v in sorted(grid)]


def val_cost(runs: tuple[Measurement, ...]) -> float:
    """Mean over seeds of dense − trained validation accuracy (positive: the training cost accuracy)."""
    return round(_mean([m.dense_val_acc - m.val_acc for m in runs]), _DIGITS)


def choose_lam(grid: dict[float, list[Measurement]], tolerance: float = TOLERANCE) -> Choice:
    """Slimming's λ: the largest value whose mean paired validation cost is at most ``tolerance``."""
    points = []
    for value, runs in _paired(grid, "method.lam"):
        cost = val_cost(runs)
        points.append(Point(value, runs, cost, cost <= tolerance))
    within = [p.value for p in points if p.qualifies]
    rule = (
        f"the largest λ whose sparsity training costs ≤ {tolerance * 100:g} pp of validation accuracy against the "
        f"dense model (mean of the paired per-seed differences; Liu et al. 2017 §4.3)"
    )
    if not within:
        cheapest = min(points, key=lambda p: p.score)
        return Choice(
            None,
            tuple(points),
            rule,
            f"no λ of the grid costs ≤ {tolerance * 100:g} pp (the cheapest, λ = {cheapest.value:g}, costs "
            f"{cheapest.score * 100:.2f} pp): none chosen; extend the grid towards 0 or check the dense model",
        )
    chosen = max(within)
    note = "" if chosen > 0 else " (no λ > 0 qualifies: slimming without the penalty)"
    return Choice(chosen, tuple(points), rule, f"λ = {chosen:g}{note}")


def choose_lr_scale(grid: dict[float, list[Measurement]]) -> Choice:
    """The fine-tuning LR scale with the highest mean validation accuracy after recovery (ties: the smaller)."""
    points = [
        Point(value, runs, round(_mean([m.val_acc for m in runs]), _DIGITS), True)
        for value, runs in _paired(grid, "method.recovery.lr_scale")
    ]
    best = max(p.score for p in points)
    chosen = min(p.value for p in points if p.score == best)
    rule = "the lr_scale with the highest mean validation accuracy after recovery (ties: the smaller scale)"
    return Choice(chosen, tuple(points), rule, f"lr_scale = {chosen:g}")


# ------------------------------------------------------------------------------------------------ the file's form
def choice_json(choice: Choice, provenance: dict[tuple[float, int], dict[str, Any]], **about: Any) -> dict[str, Any]:
    """What the calibration file keeps of one rule: its grid's measurements (each with ``provenance[(value, seed)]``,
    the store's hashes of the runs), the rule and the chosen value."""
    return {
        **about,
        "rule": choice.rule,
        "chosen": choice.value,
        "message": choice.message,
        "grid": [
            {
                "value": p.value,
                "score": p.score,
                "qualifies": p.qualifies,
                "runs": [vars(m) | provenance.get((p.value, m.seed), {}) for m in p.runs],
            }
            for p in choice.points
        ],
    }


def read_calibrations(folder: Path) -> list[dict[str, Any]]:
    """Every calibration file of ``folder`` (``*.json``), by name; a file that is not one is a one-line error."""
    found = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            raise UserError(
                f"{path}: not a calibration file ({err}); remove it or run runners.calibrate again"
            ) from None
        if not isinstance(data, dict) or "setting" not in data:
            raise UserError(f"{path}: not a calibration file (no 'setting'); remove it or run runners.calibrate again")
        found.append({**data, "path": str(path)})
    return found


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{x * 100:.2f} %"


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"


def _lam_table(part: dict[str, Any]) -> list[str]:
    lines = [
        "| λ | dense val (mean) | sparsity-trained val (mean) | val cost, paired mean | per seed | test cost "
        "(shown, not used) | within |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for point in part["grid"]:
        runs = point["runs"]
        per_seed = ", ".join(f"s{r['seed']}: {_pp(r['dense_val_acc'] - r['val_acc'])}" for r in runs)
        test = _mean([r["dense_test_acc"] - r["test_acc"] for r in runs])
        mark = "**chosen**" if point["value"] == part["chosen"] else ("yes" if point["qualifies"] else "no")
        lines.append(
            f"| {point['value']:g} | {_pct(_mean([r['dense_val_acc'] for r in runs]))} | "
            f"{_pct(_mean([r['val_acc'] for r in runs]))} | {_pp(point['score'])} | {per_seed} | {_pp(test)} | {mark} |"
        )
    return lines


def _lr_table(part: dict[str, Any]) -> list[str]:
    lines = [
        "| lr_scale | val after recovery (mean) | per seed | test after recovery (shown, not used) | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for point in part["grid"]:
        runs = point["runs"]
        per_seed = ", ".join(f"s{r['seed']}: {_pct(r['val_acc'])}" for r in runs)
        mark = "**chosen**" if point["value"] == part["chosen"] else ""
        lines.append(
            f"| {point['value']:g} | {_pct(point['score'])} | {per_seed} | "
            f"{_pct(_mean([r['test_acc'] for r in runs]))} | {mark} |"
        )
    return lines


def calibration_lines(data: dict[str, Any]) -> list[str]:
    """One calibration file as markdown: per rule its setting, grid table, rule and chosen value."""
    setting = data["setting"]
    lines = [
        f"### Calibration `{data['name']}`",
        "",
        f"Setting `{setting['line']}` (setting hash `{setting['setting_hash']}`), seeds "
        f"{', '.join(map(str, data['seeds']))}, measured on the validation split; `{data['command']}` "
        f"({data['date']}, commit `{data['commit']}`).",
        "",
    ]
    for key, title, table in ((LAM, "Slimming λ", _lam_table), (LR_SCALE, "Fine-tuning LR scale", _lr_table)):
        part = data.get(key)
        if part is None:
            continue
        chosen = "none" if part["chosen"] is None else f"**{part['chosen']:g}**"
        lines += [f"{title} (`{part['line']}`): rule: {part['rule']}.", "", *table(part), ""]
        lines += [f"Chosen: {chosen} — {part['message']}.", ""]
    return lines


def calibration_section(folder: Path) -> list[str]:
    """The report's section of every calibration file in ``folder`` (empty when there is none)."""
    found = read_calibrations(folder)
    if not found:
        return []
    lines = ["## Calibrated hyperparameters", ""]
    for data in found:
        lines += calibration_lines(data)
    return lines
