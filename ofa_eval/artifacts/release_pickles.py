"""The authors' original release files, pickled pandas 1.5 DataFrames, read without pandas.

Loading a pickle calls whatever globals it names, so these files go through a restricted
unpickler: `find_class` resolves only the globals the release's pickles name, and refuses any
other before anything from the file has run. pandas' globals resolve to small stand-ins here
that keep the blocks of numpy columns and the column labels; the result is a polars frame with
the same columns, values and types as the Parquet copies of the release.
"""

from __future__ import annotations

import functools
import io
import pickle
import pickletools
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from ofa_eval.common.errors import OfaError
from ofa_eval.store.parquet import require_columns


class _Frame:
    """pandas.DataFrame: pickled as an empty object whose state holds its block manager."""

    def __setstate__(self, state):
        if not isinstance(state, dict) or not isinstance(state.get("_mgr"), _BlockManager):
            raise pickle.UnpicklingError("a DataFrame without a block manager")
        self.manager = state["_mgr"]


class _BlockManager:
    """pandas' BlockManager: pickled as the arguments (blocks, [column index, row index])."""

    def __new__(cls, blocks, axes):
        manager = super().__new__(cls)
        manager.blocks, manager.axes = tuple(blocks), list(axes)
        return manager


class _Block(NamedTuple):
    values: np.ndarray  # (columns in the block, rows)
    placement: slice | np.ndarray  # the block's column positions in the frame


def _new_block(values, placement, ndim):
    if not isinstance(values, np.ndarray) or values.ndim != 2 or ndim != 2:
        raise pickle.UnpicklingError("a block that is not a two-dimensional array")
    return _Block(values, placement)


class _Index:
    def __init__(self, data, name=None):
        self.labels = list(data)


class _RangeIndex:
    def __init__(self, start, stop, step, name=None):
        self.labels = range(start, stop, step)


def _new_index(cls, state):
    if cls not in (_Index, _RangeIndex) or not isinstance(state, dict):
        raise pickle.UnpicklingError("an index of an unknown kind")
    return cls(**state)


ALLOWED_GLOBALS = {
    ("builtins", "slice"): slice,
    ("functools", "partial"): functools.partial,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    # numpy 2 keeps it in numpy._core; this is whatever function arrays pickle with
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.empty(0))[0],
    ("pandas.core.frame", "DataFrame"): _Frame,
    ("pandas.core.indexes.base", "Index"): _Index,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex,
    ("pandas.core.internals.blocks", "new_block"): _new_block,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
}


class _RefusedGlobal(Exception):
    pass


class _ReleaseUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return ALLOWED_GLOBALS[module, name]


def read_pickled_frame(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """The DataFrame pickled at `path`, which must exist and have the `required` columns."""
    if not path.is_file():
        raise OfaError(f"{path}: file not found")
    data = path.read_bytes()
    _refuse_extension_codes(data, path)
    try:
        loaded = _ReleaseUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as refused:
        raise OfaError(f"{path}: refused the global {str(refused)!r}, which no pickled release DataFrame "
                       "names (it was not run)") from None
    except Exception as error:  # a damaged pickle fails in many ways, none of them the user's to debug
        raise OfaError(f"{path}: not a readable pickled DataFrame ({_first_line(error)})") from None
    return require_columns(_polars_frame(loaded, path), required, path)


def _refuse_extension_codes(data: bytes, path: Path) -> None:
    """Reject EXT opcodes and malformed opcode streams before loading.

    Extension codes are resolved through copyreg's process-wide cache, which can bypass
    `find_class`; no pandas pickle uses them.
    """
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name.startswith("EXT"):
                raise OfaError(f"{path}: refused to load a pickle with a copyreg extension code ({opcode.name})")
    except (ValueError, EOFError) as error:
        raise OfaError(f"{path}: not a readable pickled DataFrame ({_first_line(error)})") from None


def _polars_frame(loaded, path: Path) -> pl.DataFrame:
    """The frame's columns in order, each from its row in its block."""
    if not isinstance(getattr(loaded, "manager", None), _BlockManager) or len(loaded.manager.axes) != 2:
        raise OfaError(f"{path}: the pickle does not hold a DataFrame")
    column_index, row_index = loaded.manager.axes
    labels = getattr(column_index, "labels", None)
    if not isinstance(getattr(row_index, "labels", None), range) or not labels:
        raise OfaError(f"{path}: the pickled DataFrame has no columns or a row index other than 0..n-1")
    if not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
        raise OfaError(f"{path}: the pickled DataFrame's column names are not distinct strings")
    columns = [None] * len(labels)
    for block in loaded.manager.blocks:
        for position, values in zip(_positions(block, len(labels), path), block.values):
            if columns[position] is not None or len(values) != len(row_index.labels):
                raise OfaError(f"{path}: the pickled DataFrame's blocks do not fit its index")
            columns[position] = values
    if any(values is None for values in columns):
        raise OfaError(f"{path}: the pickled DataFrame's blocks do not cover its columns")
    try:
        return pl.DataFrame([_series(label, values) for label, values in zip(labels, columns)])
    except (pl.exceptions.PolarsError, TypeError, ValueError) as error:
        raise OfaError(f"{path}: a column of the pickled DataFrame has mixed types ({_first_line(error)})") from None


def _positions(block, n_columns: int, path: Path) -> list[int]:
    if not isinstance(block, _Block):
        raise OfaError(f"{path}: the pickled DataFrame has a block of an unknown kind")
    if isinstance(block.placement, slice):
        positions = list(range(n_columns)[block.placement])
    elif isinstance(block.placement, np.ndarray) and block.placement.dtype.kind == "i":
        positions = block.placement.tolist()
    else:
        raise OfaError(f"{path}: the pickled DataFrame has a block without column positions")
    if len(positions) != len(block.values) or not all(0 <= p < n_columns for p in positions):
        raise OfaError(f"{path}: the pickled DataFrame's blocks do not fit its columns")
    return positions


def _series(label: str, values: np.ndarray) -> pl.Series:
    # object columns hold Python strings (or lists of them, the averaged run ids)
    if values.dtype == object:
        return pl.Series(label, values.tolist(), strict=True)
    return pl.Series(label, np.ascontiguousarray(values))


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
