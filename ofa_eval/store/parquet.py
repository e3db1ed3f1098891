"""Reading Parquet inputs with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ofa_eval.common.errors import OfaError


def read_parquet(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """The table at `path`, which must exist, parse and have the `required` columns."""
    if not path.is_file():
        raise OfaError(f"{path}: file not found")
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several error types for a broken file
        raise OfaError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
    return require_columns(frame, required, path)


def require_columns(frame: pl.DataFrame, required: tuple[str, ...], path: Path) -> pl.DataFrame:
    """`frame` when it has every `required` column; else a one-line error naming the file."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise OfaError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame
