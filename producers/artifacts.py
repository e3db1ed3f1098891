"""Writing run folders (docs/artifacts.md): atomic files, gold/prediction tables, the manifest.

Every file goes to a temporary name in its destination folder and is renamed into place, so a
reader (or a killed job) never sees half a file. File names come from `ofa_eval.artifacts.run_format` and
column names from the task registry (`ofa_eval.tasks`), which `ofa-eval ingest`, the reader of
the same format, uses too, so writer and reader cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from ofa_eval.common.keys import file_sha256
from ofa_eval.artifacts.run_format import EXAMPLE_ID, MANIFEST, prediction_file
from ofa_eval.tasks.registry import get_task

__all__ = ["atomic_path", "write_json", "write_table", "read_manifest_if_any", "table_name", "gold_table",
           "prediction_table", "folder_bytes", "file_sha256"]


def _file_mode() -> int:
    """What a newly created file's mode would be (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.

    The file gets the usual permissions (some writers, like safetensors, create it owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        yield temporary
        os.chmod(temporary, _file_mode())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_json(path, value) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=1) + "\n")


def write_table(path, columns: dict[str, list]) -> None:
    """A Parquet file from equal-length columns (or a list of row dicts under key None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(columns[None]) if None in columns else pa.table(columns)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")


def read_manifest_if_any(run_dir) -> dict | None:
    path = Path(run_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def table_name(eval_set) -> str:
    """`<dataset>__<language>__<split>.parquet` for an evaluation set."""
    return prediction_file(*eval_set.key)


def gold_table(task: str, example_ids: list[str], gold: list) -> dict[str, list]:
    return {EXAMPLE_ID: example_ids, get_task(task).gold_column: gold}


def prediction_table(task: str, example_ids: list[str], predictions: list) -> dict[str, list]:
    return {EXAMPLE_ID: example_ids, get_task(task).prediction_column: predictions}


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
