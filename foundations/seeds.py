"""Seeds derived from the configured ones, defined once."""

from __future__ import annotations

import torch

# Any fixed shift: a re-initialization (SNIP's fresh init, the lottery's reinit control, Scratch-E/B) draws from
# seeds.init + REINIT_OFFSET so that it is independent of the original initialization yet reproducible.
REINIT_OFFSET = 1_000_003
_EPOCH_STRIDE = 1_000_003  # a large prime: seeds of neighbouring (data_seed, epoch) pairs never collide


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def epoch_seed(data_seed: int, epoch: int) -> int:
    """The data order of epoch ``epoch`` is a pure function of ``(data_seed, epoch)``: resuming needs no RNG state."""
    return (data_seed * _EPOCH_STRIDE + epoch) % (2**63 - 1)


_STEP_STRIDE = 1000


def step_seed(data_seed: int, step: int) -> int:
    """The data order of the ``step``-th (from 0) of several short trainings inside one method, each its own (ThiNet's
    fine-tune after its layer step + 1): ``data_seed + 1000 · (step + 1)``, never ``data_seed`` itself."""
    return data_seed + _STEP_STRIDE * (step + 1)
