"""What a pruning method is: a typed config and a ``run(exp)`` that chains store stages.

A method module defines one subclass with a ``Config`` dataclass and sets ``METHOD = TheClass``; the registry in
``methods/__init__.py`` finds it, so a new method is one module plus one ``conf/method/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Optional

from methods.masks import Prunable
from foundations.checks import check

if TYPE_CHECKING:
    from runners.experiment import Experiment


@dataclass
class MethodConfig:
    name: str = "dense"
    sparsity: float = 0.0  # fraction of prunable weights (unstructured) or channels (structured) removed
    prunable: Prunable = field(default_factory=Prunable)

    def __post_init__(self) -> None:
        check(0.0 <= self.sparsity < 1.0, "method.sparsity", f"must be in [0, 1) (got {self.sparsity})")


@dataclass
class Recovery:
    """How the pruned network is trained afterwards, relative to the dense ``train`` config.

    ``epochs``/``lr`` of None keep the dense values; ``lr_scale`` multiplies the LR (Han: 0.1).
    """

    epochs: Optional[int] = None
    lr: Optional[float] = None
    lr_scale: float = 1.0
    schedule: Optional[str] = None
    milestones: Optional[list[float]] = None

    def __post_init__(self) -> None:
        check(self.epochs is None or self.epochs >= 1, "method.recovery.epochs", f"must be >= 1 (got {self.epochs})")
        check(self.lr_scale > 0, "method.recovery.lr_scale", f"must be > 0 (got {self.lr_scale})")


class Method:
    name: ClassVar[str]
    kind: ClassVar[str] = "unstructured"  # dense | unstructured | structured
    Config: ClassVar[type] = MethodConfig

    def __init__(self, cfg):
        self.cfg = cfg

    def label(self) -> str:
        """How the method appears in tables and legends."""
        return self.name

    def validate(self, exp: "Experiment") -> None:
        """Refuse impossible requests (UserError) before any stage is written."""

    def run(self, exp: "Experiment") -> dict:
        """Chain stages through ``exp`` and return ``exp.finish(...)``."""
        raise NotImplementedError
