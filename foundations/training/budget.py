"""Training budget of a result: what every train stage behind it spent, and the sum from initialization.

Pure functions of what a train stage stores (its ``TrainConfig``, the iteration it started from and the one it
ended at) and of the training split's size, so a stage reused from the store counts as one computed here: the budget
is of the result, not of the process that assembled it.

Counted per train stage (``stage_budget``) and summed (``total_budget``):

- ``steps``: optimizer steps taken by the stage (``end - start``; a rewound stage starts at its rewind iteration);
- ``epochs``: steps / batches per epoch (fractional for an ``iterations`` schedule);
- ``examples``: training examples seen; every epoch's last batch is the remainder (the loop keeps it: no drop_last);
- ``lr_integral``: Σ over the stage's steps of the learning rate the optimizer used at that step, ``lr ·
  lr_factor(cfg, t, total)`` — the loop's own function of the iteration (``foundations.training.loop``), so a
  replayed schedule (rewinding) integrates the part it replays;
- ``train_macs``: multiply-adds of training, mask-aware. Convention: one training example costs forward + backward
  = 3 × the forward multiply-adds (the backward pass computes the gradient with respect to the inputs and to the
  weights, each as many multiply-adds as the forward; Baydin et al. / the usual "≈ 3× forward" of RigL, Evci et al.
  2020 Appendix H). The forward count is that of the network as pruned during the stage (nonzero weights of the
  Conv2d/Linear layers, kept channels of a compacted one: ``runners.metrics.count_flops``'s ``flops_effective``) of the
  weights it starts from; a stage whose masks change while it trains (GMP) is counted with its start masks (all
  weights), an upper bound. BatchNorm, activations and the optimizer's update are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from foundations.training.config import TrainConfig
from foundations.training.loop import lr_factor, total_iterations

# The fields summed over stages into the total (``total_budget``).
SUMMED = ("steps", "epochs", "examples", "lr_integral", "train_macs")
TRAIN_MACS_PER_FORWARD = 3  # forward + backward (inputs and weights): see the module docstring


def lr_trace(cfg: TrainConfig, batches_per_epoch: int, start: int, end: int) -> list[float]:
    """The learning rate of each optimizer step ``start .. end - 1`` of a schedule ``cfg`` (the loop's own rule)."""
    total = total_iterations(cfg, batches_per_epoch)
    return [cfg.lr * lr_factor(cfg, t, total) for t in range(start, end)]


def examples_seen(n_examples: int, batch_size: int, start: int, end: int) -> int:
    """Training examples the steps ``start .. end - 1`` see: full batches, and each epoch's last batch the rest."""
    per_epoch = -(-n_examples // batch_size)

    def upto(t: int) -> int:  # examples of steps 0 .. t - 1: whole epochs, then full batches of the next one
        epochs, offset = divmod(t, per_epoch)
        return epochs * n_examples + offset * batch_size

    return upto(end) - upto(start)


def stage_budget(
    cfg: TrainConfig, *, n_examples: int, start: int, end: int, forward_macs: int, stage: str = ""
) -> dict[str, Any]:
    """One train stage's budget (module docstring): ``cfg`` its schedule, ``start``/``end`` the iterations it began
    and ended at, ``forward_macs`` the per-example forward multiply-adds of the network it trained."""
    per_epoch = -(-n_examples // cfg.batch_size)
    steps = end - start
    examples = examples_seen(n_examples, cfg.batch_size, start, end)
    return {
        "stage": stage,
        "start_iteration": start,
        "steps": steps,
        "epochs": steps / per_epoch,
        "examples": examples,
        "lr_integral": sum(lr_trace(cfg, per_epoch, start, end)),
        "forward_macs": int(forward_macs),
        "train_macs": TRAIN_MACS_PER_FORWARD * int(forward_macs) * examples,
    }


def total_budget(stages: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of the stages' budgets (``SUMMED`` fields)."""
    listed = list(stages)
    return {key: sum(s[key] for s in listed) for key in SUMMED}


def lineage(final: str, parents: Mapping[str, Iterable[str]]) -> set[str]:
    """The hashes ``final`` descends from (itself included), through ``parents`` (hash -> parent hashes): the stages
    whose work the result carries — a stage only looked at beside it (Scratch's dense reference) is not one."""
    seen: set[str] = set()
    todo = [final]
    while todo:
        digest = todo.pop()
        if digest not in seen:
            seen.add(digest)
            todo.extend(parents.get(digest, ()))
    return seen


def result_budget(final: str, parents: Mapping[str, Iterable[str]], stages: Iterable[Mapping[str, Any]]) -> dict:
    """The record's ``training_budget``: the train stages (each with its ``hash``) behind ``final``, in the order they
    were asked for (each once), and their total from initialization."""
    behind = lineage(final, parents)
    kept: list[dict] = []
    for spent in stages:  # a stage asked for twice (a rewind point looked up again) was trained once
        if spent["hash"] in behind and all(spent["hash"] != k["hash"] for k in kept):
            kept.append(dict(spent))
    return {"stages": kept, "total": total_budget(kept)}
