"""IDX files (MNIST / Fashion-MNIST format), gzipped or raw."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from runners.errors import UserError

_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise UserError(f"{path}: cannot read IDX file ({err}); re-download or fix dataset.data_dir") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number); check dataset.data_dir")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise UserError(f"{path}: truncated or corrupt IDX file ({len(data)} bytes, expected {expected}); re-download it")
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return torch.from_numpy(array.copy())
