"""The W&B mode a run really gets: ``online`` needs an API key; without one prunelab logs offline (one warning)."""

from __future__ import annotations

import logging
import netrc
import os

log = logging.getLogger("prunelab.wandb")


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def effective_mode(requested: str) -> str:
    if requested == "online" and not has_api_key():
        log.warning("W&B: online mode but no API key (WANDB_API_KEY or ~/.netrc); logging offline instead")
        return "offline"
    return requested
