"""IDX files, the MNIST / Fashion-MNIST format, gzipped or raw.

Layout (big-endian): two zero bytes, a type byte, the number of dimensions, one uint32 per dimension, then the data.
Gzip is recognised by its magic bytes, not by the file name. Anything unreadable raises a one-line UserError naming
the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from foundations.errors import UserError

_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _bad(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}; re-download the file or point dataset.data_dir at a good copy")


def read_idx(path: Union[str, Path]) -> torch.Tensor:
    """The array stored in an IDX file, as a tensor of its own dtype (uint8 for (Fashion-)MNIST)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)  # one call: much faster than streaming through gzip.open
    except EOFError:
        raise _bad(path, "truncated gzip stream (the file ends early)") from None
    except (OSError, zlib.error) as err:
        raise _bad(path, f"cannot read it as an IDX file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise _bad(path, f"not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if ndim == 0 or len(data) < offset:
        raise _bad(path, f"truncated or corrupt IDX header ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _DTYPES[data[2]]
    expected = offset + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "corrupt (trailing bytes)"
        raise _bad(path, f"{state} IDX file: {len(data)} bytes, the header {dims} promises {expected}")
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))  # writable, native byte order
