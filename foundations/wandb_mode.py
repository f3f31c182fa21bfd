"""The W&B mode a run really gets: ``online`` needs an API key; without one prunelab logs offline (one warning)."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Literal, TypeGuard, get_args

log = logging.getLogger("prunelab.wandb")

WandbMode = Literal["online", "offline", "disabled", "shared"]  # what ``wandb.init(mode=...)`` takes
MODES: tuple[str, ...] = get_args(WandbMode)
LEGACY: dict[str, WandbMode] = {"dryrun": "offline", "run": "online"}  # old spellings wandb still accepts


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _is_mode(mode: str) -> TypeGuard[WandbMode]:
    return mode in MODES


def effective_mode(requested: str) -> WandbMode:
    mode = LEGACY.get(requested, requested)
    if not _is_mode(mode):
        raise ValueError(f"W&B mode: unknown mode {requested!r}; use one of {', '.join(MODES)}")
    if mode == "online" and not has_api_key():
        log.warning("W&B: online mode but no API key (WANDB_API_KEY or ~/.netrc); logging offline instead")
        return "offline"
    return mode
