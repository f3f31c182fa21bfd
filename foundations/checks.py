"""One-line validation of typed configs, and the part of a config a stage hash covers."""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING as REQUIRED  # "???": a field the YAML must set
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from foundations.errors import ConfigError, UserError


def check(ok: bool, key: str, message: str) -> None:
    """Raise the one-line error (``ConfigError``: ``key`` is the field) the entry point prints when ``ok`` is false."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


_FULL_KEY = re.compile(r"full_key:\s*(\S+)")


@functools.cache
def _template(schema: type) -> DictConfig:
    """The schema as an OmegaConf node, built once (``OmegaConf.merge`` copies it before merging into it)."""
    return OmegaConf.structured(schema)


def typed(schema: type, node: Any, prefix: str, *, instantiate: bool = True) -> Any:
    """Merge a config node into ``schema`` and instantiate it; errors become one line naming the field.

    ``instantiate=False`` checks only keys and types (a partial node, e.g. one command-line override, whose
    cross-field checks need the rest of the config) and returns the merged DictConfig."""
    try:
        if isinstance(node, DictConfig):  # resolve in the full config first: `${survey.dense_epochs}` points outside
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(_template(schema), node if node is not None else {})
        return OmegaConf.to_object(merged) if instantiate else merged
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0]
        key = _FULL_KEY.search(str(err))
        name = f"{prefix}.{key.group(1)}" if key else prefix
        raise UserError(f"{name}: {message}") from None


def moved_default(value: Any, *, hashed_as: Any) -> Any:
    """A dataclass field whose default moved from a YAML into its schema (``conf/method/<name>.yaml`` used to set
    it): ``value`` is the default, and ``nondefault`` still measures the field against ``hashed_as``, the schema's
    default when the hashes of existing stages were taken, so the move changed no hash."""
    if is_dataclass(value):
        return field(default_factory=lambda: copy.deepcopy(value), metadata={"hash_default": hashed_as})
    return field(default=value, metadata={"hash_default": hashed_as})


def _default(obj: Any, f: Any) -> Any:
    if "hash_default" in f.metadata:
        return f.metadata["hash_default"]
    identity = getattr(type(obj), "HASH_DEFAULTS", {})
    if f.name in identity:
        return identity[f.name]
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING  # a required field: never equal to its value, so always hashed


def nondefault(obj: Any) -> Any:
    """The fields of a (nested) dataclass that differ from their defaults — what a stage hash covers.

    As in OpenLTH, a field added later with a default leaves every existing hash unchanged. A field declared with
    ``moved_default`` is measured against the default its hashes were taken with. A dataclass may name, in a class
    attribute ``HASH_DEFAULTS``, fields its subclasses' hashes always measure against the base's defaults, whatever
    default a subclass declares (``MethodConfig``: a method's ``name`` and ``sparsity``, so that every method's own
    defaults are in its hashes without any declaration of its own).
    """
    if is_dataclass(obj):
        return {
            f.name: nondefault(getattr(obj, f.name)) for f in fields(obj) if getattr(obj, f.name) != _default(obj, f)
        }
    if isinstance(obj, dict):
        return {k: nondefault(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nondefault(v) for v in obj]
    return obj


def split_target(node: dict, own: tuple[str, ...]) -> dict:
    """A ``_target_`` YAML node (a user's callable) as schema fields: ``_target_`` -> ``target``, the keys that are
    not prunelab's own (``own``) -> ``kwargs``, the callable's arguments. A node already split is returned as is."""
    if "target" in node:
        return node
    mine = {k: v for k, v in node.items() if k in own}
    return {
        **mine,
        "target": node.get("_target_", REQUIRED),
        "kwargs": {k: v for k, v in node.items() if k not in own and k != "_target_"},
    }


def typed_target(schema: type, node: dict, own: tuple[str, ...], prefix: str) -> Any:
    """``typed`` for a ``_target_`` node; errors name the YAML key ``_target_``, not the schema's ``target``."""
    try:
        return typed(schema, split_target(node, own), prefix)
    except UserError as err:
        message = str(err)
        if message.startswith(f"{prefix}.target:"):
            message = f"{prefix}._target_: required, a dotted path to the callable (set {prefix}._target_=...)"
        raise UserError(message) from None
