"""Cache keys shared by import, ingest, materialization and the protocol."""

import hashlib
from pathlib import Path


def member_key(member_ids) -> str:
    """An order-free key of an averaged model's member set.

    Members are identified by strings: a run's external id for released results, or a
    snapshot's content hash for ingested runs. Averaging is order-free, so the key is too.
    """
    return hashlib.sha256(",".join(sorted(member_ids)).encode()).hexdigest()


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """The SHA-256 of a file's content, read in chunks (weight files are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def examples_key(example_ids) -> str:
    """The key of an ordered list of example ids: per-example statistics with equal keys pair up."""
    return hashlib.sha256("\n".join(map(str, example_ids)).encode()).hexdigest()
