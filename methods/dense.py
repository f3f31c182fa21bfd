"""The unpruned baseline: train the dense model (the stage every after-training method shares)."""

from __future__ import annotations

from typing import ClassVar

from foundations.record import ExperimentRecord
from methods.pipeline.api import Method, MethodConfig, Stages


class Dense(Method):
    name = "dense"
    kind = "dense"
    Config = MethodConfig
    # nothing is pruned: the sparsity and the prunable set only change what the record reports
    result_neutral: ClassVar[frozenset[str]] = frozenset(
        {"sparsity", "prunable.biases", "prunable.batchnorm", "prunable.classifier", "prunable.exclude"}
    )
    ignored = {"sparsity": "nothing is pruned", "prunable": "nothing is pruned"}

    def chain(self, stages: Stages) -> ExperimentRecord:
        dense = stages.dense_stage()
        return stages.finish(dense, dense=dense)


METHOD = Dense
