"""Opening the DuckDB store: creation, schema versioning, locking and transactions.

Every write to the store goes through `transaction()`, so a failed import or ingest leaves the
store exactly as it was. A new store gets `schema.sql` (version 1) and then every migration in
`migrations/` (`<version>.sql`, applied in order); a writable open of an older store applies the
migrations it lacks in one transaction.

DuckDB lets one process write a database file, or several read it. A command that finds the
store locked by another process retries for up to the lock timeout (`ofa-eval --lock-timeout`,
`OFA_EVAL_LOCK_TIMEOUT`), then stops with one line naming the holder. A new store is made under
a temporary name and linked into place only if the path is still free, so two commands creating
one store at once both end up with the same, complete store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from importlib import resources

import duckdb

from ofa_eval.common.errors import OfaError

SCHEMA_VERSION = 4
LOCK_TIMEOUT_ENV = "OFA_EVAL_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 60.0  # seconds
_lock_timeout: float | None = None  # set by the command line (`--lock-timeout`)


def set_lock_timeout(seconds: float | None) -> None:
    """How long opening a locked store waits before it gives up (None: the environment's, else the default)."""
    global _lock_timeout
    if seconds is not None and seconds < 0:
        raise OfaError(f"--lock-timeout {seconds:g}: not a number of seconds >= 0")
    _lock_timeout = seconds


def lock_timeout() -> float:
    if _lock_timeout is not None:
        return _lock_timeout
    value = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(value) if value else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise OfaError(f"{LOCK_TIMEOUT_ENV}={value!r}: not a number of seconds") from None


def _schema_sql() -> str:
    return resources.files("ofa_eval.store").joinpath("schema.sql").read_text()


def _migration_sql(version: int) -> str:
    """The DDL that takes a store from `version - 1` to `version`."""
    return resources.files("ofa_eval.store").joinpath("migrations", f"{version}.sql").read_text()


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection, waiting (with backoff) up to the lock timeout while another process holds the store."""
    timeout = lock_timeout()
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as error:
            message = str(error).splitlines()[0]
            if not _is_lock_error(message):
                raise OfaError(f"{path}: cannot open the store ({_short(message)})") from None
            if time.monotonic() >= deadline:
                raise OfaError(f"{path}: the store is locked by another process ({_holder(message)}); "
                               f"gave up after {timeout:g} s (--lock-timeout, {LOCK_TIMEOUT_ENV})") from None
        except duckdb.Error as error:
            raise OfaError(f"{path}: not a DuckDB store ({str(error).splitlines()[0]})") from None
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(2 * delay, 1.0)


def _is_lock_error(message: str) -> bool:
    return "lock" in message.lower()


def _holder(message: str) -> str:
    """Who holds the lock, from DuckDB's message ("Conflicting lock is held in PROGRAM (PID N)")."""
    found = re.search(r"held in (.*?) \(PID (\d+)\)", message)
    return f"PID {found.group(2)}, {found.group(1)}" if found else _short(message)


def _short(message: str) -> str:
    return message.split(". See also")[0]


def is_disk_full(error: BaseException) -> bool:
    """A write failed for lack of space (ENOSPC) or over the file size limit (EFBIG)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG):
        return True
    text = str(error).lower()
    return "no space left" in text or "file too large" in text


def disk_full_error(path, error: BaseException) -> OfaError:
    """The one-line error for a full disk while writing `path`."""
    reason = "file too large" if "too large" in str(error).lower() else "no space left on the device"
    return OfaError(f"{path}: {reason} while writing; the store keeps its earlier state")


def _stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    # duckdb_tables() rather than information_schema.tables: about 10 ms less on a fresh connection
    has_info = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'store_info'").fetchall()[0][0]
    if not has_info:
        return None
    rows = con.execute("SELECT value FROM store_info WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else None


def _create_store(path: str) -> None:
    """A new store at `path`, unless another process made one first: built under a temporary
    name, closed, then hard-linked into place, which fails when the path exists (never a half-made file)."""
    temporary = f"{path}.new-{os.getpid()}"
    try:
        con = duckdb.connect(temporary)
        try:
            _create_schema(con)
        finally:
            con.close()
        _link_if_absent(temporary, path)
    except OSError as error:
        raise (disk_full_error(path, error) if is_disk_full(error)
               else OfaError(f"{path}: cannot create the store ({error.strerror or error})")) from None
    except duckdb.Error as error:
        if is_disk_full(error):
            raise disk_full_error(path, error) from None
        raise
    finally:
        for leftover in (temporary, f"{temporary}.wal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def _link_if_absent(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass  # another process created the store first: use theirs
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise
        if not os.path.exists(target):  # a file system without hard links: not race-free
            os.replace(source, target)


def _create_schema(con: duckdb.DuckDBPyConnection) -> None:
    with transaction(con):
        con.execute(_schema_sql())
        con.execute("INSERT INTO store_info VALUES ('schema_version', '1'), ('created_by', 'ofa-eval')")
        _apply_migrations(con, 1)


def _apply_migrations(con: duckdb.DuckDBPyConnection, version: int) -> None:
    for newer in range(version + 1, SCHEMA_VERSION + 1):
        con.execute(_migration_sql(newer))
    con.execute("UPDATE store_info SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])


def _check_version(path: str, con: duckdb.DuckDBPyConnection, read_only: bool) -> int | None:
    """The store's schema version after any migration; None for an empty DuckDB file."""
    version = _stored_version(con)
    if version is None:
        tables = con.execute("SELECT count(*) FROM information_schema.tables").fetchall()[0][0]
        if tables:
            raise OfaError(f"{path}: a DuckDB file, but not an ofa-eval store (no store_info table)")
        return None
    if version > SCHEMA_VERSION:
        raise OfaError(
            f"{path}: store schema version {version} is newer than this ofa-eval "
            f"(supports {SCHEMA_VERSION}); upgrade ofa-eval"
        )
    if version < SCHEMA_VERSION:
        if read_only:
            raise OfaError(f"{path}: store schema version {version} is older than this ofa-eval's "
                           f"({SCHEMA_VERSION}); any writing command (e.g. `ofa-eval protocol`) upgrades it")
        with transaction(con):
            _apply_migrations(con, version)
    return SCHEMA_VERSION


def open_store(path: str, *, read_only: bool = False, must_exist: bool = False):
    """Connect to the store at `path`, creating it (writable mode only) when absent."""
    exists = os.path.exists(path)
    if not exists and (read_only or must_exist):
        raise OfaError(f"{path}: no store here (create one with `ofa-eval import` or `ofa-eval ingest`)")
    if not exists:
        _create_store(path)
    con = _connect(path, read_only=read_only)
    try:
        if _check_version(path, con, read_only) is None:
            if read_only:
                raise OfaError(f"{path}: empty store")
            _create_schema(con)
    except BaseException:
        con.close()  # a connection left open would keep its read-only mode for this process
        raise
    return con


@contextlib.contextmanager
def connected(path: str, *, read_only: bool = False, must_exist: bool = False):
    """`open_store` as a context manager that always closes the connection."""
    con = open_store(path, read_only=read_only, must_exist=must_exist)
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection):
    """All-or-nothing: commit when the block finishes, roll back on any exception."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # after a fatal error (a full disk) DuckDB has rolled back already
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


INSERT_ROWS_PER_STATEMENT = 1000


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows) -> None:
    """Insert `rows` (tuples in the order of `columns`) with one multi-row VALUES statement per
    thousand rows: DuckDB's `executemany` runs a statement per row, about 1 ms each."""
    rows = list(rows)
    placeholders = f"({', '.join('?' * len(columns))})"
    for start in range(0, len(rows), INSERT_ROWS_PER_STATEMENT):
        chunk = rows[start:start + INSERT_ROWS_PER_STATEMENT]
        con.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([placeholders] * len(chunk))}",
                    [value for row in chunk for value in row])


def ensure_task(con: duckdb.DuckDBPyConnection, task: str, metric: str) -> None:
    """Record a task's primary metric, refusing a conflicting one."""
    rows = con.execute("SELECT metric FROM task_table WHERE task = ?", [task]).fetchall()
    if not rows:
        con.execute("INSERT INTO task_table VALUES (?, ?)", [task, metric])
    elif rows[0][0] != metric:
        raise OfaError(f"task {task!r} is stored with metric {rows[0][0]!r}, not {metric!r}")


def ensure_eval_set(con, task, dataset, language, split, role, n_examples=None) -> int:
    """The id of an evaluation set, inserting it when new."""
    key = [task, dataset, language, split]
    rows = con.execute(
        "SELECT eval_set_id, role FROM eval_set_table WHERE task=? AND dataset=? AND language=? AND split=?",
        key,
    ).fetchall()
    if rows:
        eval_set_id, stored_role = rows[0]
        if stored_role != role:
            raise OfaError(f"evaluation set {dataset}/{language}/{split} is stored with role {stored_role!r}, not {role!r}")
        return eval_set_id
    return con.execute(
        "INSERT INTO eval_set_table (task, dataset, language, split, role, n_examples) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING eval_set_id",
        key + [role, n_examples],
    ).fetchall()[0][0]
