"""The top floor: the CLI, Hydra configs, the store, the experiment runner, W&B.

Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment says otherwise) before anything loads torch:
by default OpenMP threads that wait for work spin, so when another process shares the cores a spinning thread holds
the core its sibling needs and every parallel region waits out a scheduler slice. A 2-thread job then ran 20x slower
than with sleeping waiters (mlp_bn: 154 vs 7.2 ms per step on a loaded 2-core machine; ``benchmarks/speed.py
--threads``). OpenMP reads the variable once, when torch loads it, and joblib/SLURM workers inherit it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
