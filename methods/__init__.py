"""Method registry: every module at the top of this folder is a method plugin that defines ``METHOD``.

The shared machinery lives in the sub-package ``methods.pipeline`` (score → select → apply → recover), so the
registry needs no list of modules to skip: a package is machinery, a module is a method.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from foundations.errors import UserError

if TYPE_CHECKING:
    from methods.pipeline.api import Method


@cache
def registry() -> dict[str, type[Method]]:
    found: dict[str, type[Method]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.METHOD.name] = module.METHOD
    return found


def get_method(name: str) -> type[Method]:
    methods = registry()
    if name not in methods:
        raise UserError(f"method.name: unknown method {name!r}; choose one of {', '.join(sorted(methods))}")
    return methods[name]
