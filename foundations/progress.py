"""Progress bars that draw only on a terminal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional


def progress_bar(iterable: Optional[Iterable] = None, *, enabled: bool = True, **kwargs):
    """A tqdm bar; ``enabled=False`` or a stderr that is not a TTY (a sweep's log file, a SLURM ``.err``) draws
    nothing. tqdm's ``disable=None`` means exactly that: a redirected survey otherwise fills its log with a
    carriage-return frame per refresh (738 KB for 28 jobs)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kwargs)
