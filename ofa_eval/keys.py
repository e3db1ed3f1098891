"""Cache keys shared by import, ingest, materialization and the protocol."""

import hashlib


def member_key(member_ids) -> str:
    """An order-free key of an averaged model's member set.

    Members are identified by strings: a run's external id for released results, or a
    snapshot's content hash for ingested runs. Averaging is order-free, so the key is too.
    """
    return hashlib.sha256(",".join(sorted(member_ids)).encode()).hexdigest()
