"""Temporary files named after the process that owns them, and the sweep of those whose owner died.

A writer creates `temporary_path(final)` beside its final path and moves it into place once
complete. A process killed before that (SIGKILL, the OOM killer, a SLURM time limit) leaves the
temporary behind, as large as the output it was writing; `remove_orphans(folder)` removes the
temporaries of that folder whose owner process no longer exists. Names look like
`.model.safetensors.tmp-<host>-<pid>-<random>`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from pathlib import Path

_TEMPORARY_NAME = re.compile(r"\.(?P<final>.+)\.tmp-(?P<host>[\w.-]+)-(?P<pid>[1-9][0-9]*)-[0-9a-f]{8}",
                             re.ASCII)


def _host() -> str:
    return re.sub(r"[^\w.-]", "_", socket.gethostname(), flags=re.ASCII) or "localhost"


def temporary_path(final_path: Path) -> Path:
    """A fresh temporary name beside `final_path`, naming this host and process as its owner."""
    final_path = Path(final_path)
    return final_path.with_name(f".{final_path.name}.tmp-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def temporary_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) of a name made by `temporary_path`; None for any other name."""
    match = _TEMPORARY_NAME.fullmatch(Path(path).name)
    return (match["host"], int(match["pid"])) if match else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a pid no system has: leave it alone
        return True
    return True


def is_orphan(path: Path) -> bool:
    """Whether `path` is a temporary whose owner process is gone.

    Only this host's temporaries can be judged: on a shared filesystem (a cluster's home or
    scratch) a process id means nothing on another host, so other hosts' temporaries are kept.
    """
    owner = temporary_owner(path)
    return owner is not None and owner[0] == _host() and not _process_exists(owner[1])


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporaries (files or folders) in `folder` whose owner process is gone; returns them.

    Best effort: a temporary that cannot be removed is left, since the sweep is housekeeping
    and must never make the writer that calls it fail.
    """
    try:
        candidates = [Path(entry.path) for entry in os.scandir(folder)]
    except OSError:
        return []
    removed = []
    for path in filter(is_orphan, candidates):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed
