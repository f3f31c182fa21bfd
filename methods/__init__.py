"""Method registry: every module in this folder that defines ``METHOD`` is a method, named ``METHOD.name``."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from foundations.errors import UserError

_MACHINERY = {"base", "masks", "select", "unstructured", "structured"}


@cache
def registry() -> dict:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg or info.name in _MACHINERY:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if method is not None:
            found[method.name] = method
    return found


def get_method(name):
    methods = registry()
    if name not in methods:
        raise UserError(f"method.name: unknown method {name!r}; choose one of {', '.join(sorted(methods))}")
    return methods[name]
