"""The one training loop every stage uses (dense training, fine-tuning, rewind-and-retrain, scratch).

Design choices that make results reproducible and resumable:
- the data order of epoch ``e`` is a pure function of ``(data_seed, e)``, so a resumed run needs no sampler state;
- the learning rate is a pure function of the iteration (no scheduler object to save);
- a checkpoint (weights, optimizer, iteration, metrics, best weights, RNG) is written atomically after every epoch,
  so a killed run continues from its last epoch and ends with bitwise-identical numbers;
- a non-finite loss or weight stops training with ``Diverged`` rather than finishing "ok" at chance accuracy; no
  checkpoint or evaluation is ever taken of diverged weights.

Each evaluation is one INFO line on the logger ``prunelab.progress`` (a Hydra job writes it to its log file only, the
progress bar being the console's), and a resumed run says so on ``prunelab``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from foundations.files import save_torch
from foundations.progress import progress_bar
from foundations.seeds import epoch_seed
from foundations.training.config import TrainConfig
from foundations.training.layout import channels_last, conv_geometries

log = logging.getLogger("prunelab")
progress_log = logging.getLogger("prunelab.progress")
GradientHook = Callable[[nn.Module], None]
StepHook = Callable[[nn.Module, torch.optim.Optimizer], None]
IterationHook = Callable[[nn.Module, torch.optim.Optimizer, int], None]


@dataclass
class Hooks:
    """Extension points: ``before_step`` edits gradients (e.g. slimming's λ·sign(γ)); ``after_step`` edits weights
    and optimizer state (e.g. re-applying masks); ``at_iteration`` acts on a schedule of its own (pruning during
    training).

    ``at_iteration(model, optimizer, t)`` sees the model after ``t`` optimizer steps of the schedule, ``t`` counted
    as the loop counts iterations (from ``start_iteration``, and from the checkpoint's iteration after a resume): once
    before the first step of a run that starts afresh (``t = start_iteration``) and after every step, after the
    ``after_step`` hooks. Over a stage's life each ``t`` is seen exactly once, resumes included: what a hook did at
    ``t`` is in the checkpoint taken after it, so a schedule keyed by ``t`` needs no state of its own.
    """

    before_step: list[GradientHook] = field(default_factory=list)
    after_step: list[StepHook] = field(default_factory=list)
    at_iteration: list[IterationHook] = field(default_factory=list)


class Diverged(RuntimeError):
    """Training produced a non-finite loss or weights: the stage stops, the experiment is recorded as failed."""

    def __init__(self, iteration: int, loss: float, what: str = ""):
        self.iteration, self.loss = iteration, loss
        super().__init__(f"diverged at iteration {iteration} (loss={loss:g}{what})")


class _DivergenceWatch:
    """Remembers the first iteration whose loss was non-finite without a host sync per step (on a GPU,
    ``if not torch.isfinite(loss)`` would stall the queue every iteration); ``check`` syncs once, at evaluations and
    before a checkpoint is written, and also checks the weights (the last step can break them after the last loss)."""

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)
        self.last_loss = torch.zeros((), device=device)

    def observe(self, loss: torch.Tensor, iteration: int) -> None:
        loss = loss.detach().float()
        new = (self.first < 0) & ~torch.isfinite(loss)
        self.first = torch.where(new, iteration, self.first)
        self.loss = torch.where(new, loss, self.loss)
        self.last_loss = loss

    def check(self, model: nn.Module, iteration: int) -> None:
        first = int(self.first)
        if first >= 0:
            raise Diverged(first, float(self.loss))
        state = [v for v in model.state_dict().values() if v.is_floating_point()]
        if state and not bool(torch.stack([torch.isfinite(v).all() for v in state]).all()):
            raise Diverged(iteration, float(self.last_loss), ", non-finite weights")


@dataclass
class TrainOutcome:
    metrics: list[dict]
    selected: dict  # the metrics row of the checkpoint the record reports (train.selection)
    final: dict
    early_stop_iteration: Optional[int]  # iteration of minimum validation loss (the lottery-ticket early-stopping
    # point); None without a validation split (dataset.val_size=0 is only allowed with train.selection=last)
    selected_state: dict
    snapshots: dict[int, dict]
    iterations: int


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def total_iterations(cfg: TrainConfig, batches_per_epoch: int) -> int:
    return cfg.iterations if cfg.iterations is not None else cfg.epochs * batches_per_epoch


def lr_factor(cfg: TrainConfig, iteration: int, total: int) -> float:
    warmup = min(1.0, (iteration + 1) / cfg.warmup_iterations) if cfg.warmup_iterations else 1.0
    if cfg.schedule == "multistep":
        return warmup * cfg.gamma ** sum(iteration >= m * total for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * iteration / total))
    if cfg.schedule == "inv":
        return warmup * (1 + cfg.inv_gamma * iteration) ** (-cfg.inv_power)
    return warmup


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module in eval mode for the duration; each module's own flag restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


@torch.inference_mode()
def evaluate(model: nn.Module, split, device: torch.device, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split (eval mode, restored afterwards)."""
    loss_sum, correct, n = 0.0, 0, 0
    with eval_mode(model):
        for x, y in split.batches(batch_size, device=device):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1)


def _state_copy(model: nn.Module) -> dict:
    # contiguous whatever the training layout: the stored weights (safetensors) and every later stage see NCHW
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def _load_checkpoint(path: Optional[Path]) -> Optional[dict]:
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated checkpoint from a kill mid-write: start over rather than crash
        print(f"warning: ignoring unreadable checkpoint {path} ({err}); training from the start")
        return None


def _select(metrics: list[dict], criterion: str, first: int = 0) -> int:
    """The row ``criterion`` picks among the evaluations at iteration ``first`` or later (the last row if none)."""
    candidates = [i for i, row in enumerate(metrics) if row["iteration"] >= first] or [len(metrics) - 1]
    if criterion == "last":
        return candidates[-1]
    if criterion == "val_loss":
        return min(candidates, key=lambda i: (metrics[i]["val_loss"], i))
    return min(candidates, key=lambda i: (-metrics[i]["val_acc"], i))


def train(
    model: nn.Module,
    data,
    cfg: TrainConfig,
    *,
    data_seed: int,
    device: torch.device,
    hooks: Optional[Hooks] = None,
    start_iteration: int = 0,
    snapshots: Iterable[int] = (),
    checkpoint: Optional[Path] = None,
    on_eval: Optional[Callable[[dict], None]] = None,
    progress: bool = True,
    desc: str = "train",
    select_from: int = 0,
) -> TrainOutcome:
    """Train ``model`` in place on ``data.train``; evaluate on ``data.val`` and ``data.test``.

    ``start_iteration`` > 0 continues the data order and LR schedule from that iteration (lottery rewinding to
    iteration k). ``snapshots`` lists iterations whose weights are kept (the rewind points). ``select_from``: only
    evaluations at that iteration or later may be the selected checkpoint (``cfg.selection``), e.g. those after the
    last change of a schedule of masks, so that the reported weights have the final masks.
    """
    hooks = hooks or Hooks()
    nhwc = channels_last(cfg.channels_last, conv_geometries(model), device)
    layout = torch.channels_last if nhwc else torch.contiguous_format
    model.to(device)
    model.to(memory_format=layout)
    optimizer = make_optimizer(model, cfg)
    per_epoch = data.train.num_batches(cfg.batch_size)
    total = total_iterations(cfg, per_epoch)
    eval_every = cfg.eval_every or per_epoch
    wanted = set(snapshots)
    metrics: list[dict] = []
    kept: dict[int, dict] = {}
    selected_state: Optional[dict] = None
    iteration = start_iteration

    state = _load_checkpoint(checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        iteration, metrics = state["iteration"], state["metrics"]
        kept, selected_state = state["snapshots"], state["selected_state"]
        torch.set_rng_state(state["rng"])
        log.info(
            "resumed %s at epoch %.4g/%.4g (iteration %d) from %s",
            desc,
            iteration / per_epoch,
            total / per_epoch,
            iteration,
            checkpoint,
        )
    else:  # a resumed run saw its iteration before the checkpoint was taken
        for iteration_hook in hooks.at_iteration:
            iteration_hook(model, optimizer, iteration)
    if iteration in wanted:
        kept[iteration] = _state_copy(model)

    model.train()
    started = time.perf_counter()
    watch = _DivergenceWatch(device)
    bar = progress_bar(total=total, initial=iteration, desc=desc, enabled=progress, leave=False, dynamic_ncols=True)
    while iteration < total:
        epoch, offset = divmod(iteration, per_epoch)
        for index, (x, y) in enumerate(
            data.train.batches(cfg.batch_size, shuffle=True, seed=epoch_seed(data_seed, epoch), device=device)
        ):
            if index < offset:  # rewinding into the middle of an epoch: same data order as the original run
                continue
            if nhwc and x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, iteration, total)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            watch.observe(loss, iteration + 1)
            loss.backward()
            for hook in hooks.before_step:
                hook(model)
            optimizer.step()
            for step_hook in hooks.after_step:
                step_hook(model, optimizer)
            iteration += 1
            for iteration_hook in hooks.at_iteration:
                iteration_hook(model, optimizer, iteration)
            bar.update(1)
            if iteration in wanted:
                kept[iteration] = _state_copy(model)
            if iteration % eval_every == 0 or iteration == total:
                watch.check(model, iteration)
                row = _eval_row(
                    model,
                    data,
                    device,
                    iteration,
                    per_epoch,
                    loss.item(),
                    cfg.lr * lr_factor(cfg, iteration - 1, total),
                )
                metrics.append(row)
                _log_eval(desc, row, total / per_epoch, time.perf_counter() - started)
                if _select(metrics, cfg.selection, select_from) == len(metrics) - 1:
                    selected_state = _state_copy(model)
                bar.set_postfix(val_acc=f"{row['val_acc']:.4f}")
                if on_eval is not None:
                    on_eval(row)
                model.train()
            if iteration == total:
                break
        if checkpoint is not None and iteration < total:
            watch.check(model, iteration)
            save_torch(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "iteration": iteration,
                    "metrics": metrics,
                    "snapshots": kept,
                    "selected_state": selected_state,
                    "rng": torch.get_rng_state(),
                },
            )
    bar.close()
    if nhwc:
        model.to(memory_format=torch.contiguous_format)
    if not metrics:  # a zero-length schedule (train.epochs=0, a checkpoint): the start weights, evaluated
        metrics.append(_eval_row(model, data, device, iteration, per_epoch, None, 0.0))
        _log_eval(desc, metrics[-1], 0, time.perf_counter() - started)
        selected_state = _state_copy(model)
    chosen = _select(metrics, cfg.selection, select_from)
    early = min(range(len(metrics)), key=lambda i: (metrics[i]["val_loss"], i))
    return TrainOutcome(
        metrics=metrics,
        selected=metrics[chosen],
        final=metrics[-1],
        early_stop_iteration=metrics[early]["iteration"] if len(data.val) else None,
        selected_state=selected_state or _state_copy(model),
        snapshots=kept,
        iterations=iteration,
    )


def _eval_row(model, data, device, iteration: int, per_epoch: int, train_loss: Optional[float], lr: float) -> dict:
    val_loss, val_acc = evaluate(model, data.val, device)
    test_loss, test_acc = evaluate(model, data.test, device)
    return {
        "iteration": iteration,
        "epoch": iteration / per_epoch,
        "train_loss": train_loss,
        "lr": lr,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
    }


def _log_eval(desc: str, row: dict, epochs: float, elapsed: float) -> None:
    loss = "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
    progress_log.info(
        "%s: epoch %.4g/%.4g, iteration %d, train loss %s, val acc %.4f, test acc %.4f, lr %.4g, %.1f s",
        desc,
        row["epoch"],
        epochs,
        row["iteration"],
        loss,
        row["val_acc"],
        row["test_acc"],
        row["lr"],
        elapsed,
    )
