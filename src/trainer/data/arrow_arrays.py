"""pyarrow arrays as NumPy arrays, read from their buffers: pyarrow's own to_numpy (and any Python value handed to
pyarrow) imports pandas, where it is installed, which takes longer than reading a large table."""

from __future__ import annotations

from typing import Union

import numpy as np
import pyarrow as pa


def as_numpy(values: Union[pa.Array, pa.ChunkedArray], dtype: type) -> np.ndarray:
    """A primitive array without nulls (numbers of `dtype`, not booleans, which pyarrow packs in bits) as NumPy:
    an Array's buffer in place, read-only; a ChunkedArray's chunks joined, in a new array."""
    def of(chunk: pa.Array) -> np.ndarray:
        if len(chunk) == 0:  # pyarrow may leave its data buffer out
            return np.empty(0, dtype)
        return np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * np.dtype(dtype).itemsize)

    if isinstance(values, pa.Array):
        return of(values)
    return np.concatenate([of(chunk) for chunk in values.chunks] or [np.empty(0, dtype)])
