"""The unpruned baseline: train the dense model (the stage every after-training method shares)."""

from __future__ import annotations

from methods.base import Method, MethodConfig


class Dense(Method):
    name = "dense"
    kind = "dense"
    Config = MethodConfig

    def run(self, exp):
        dense = exp.dense_stage()
        return exp.finish(dense, dense=dense)


METHOD = Dense
