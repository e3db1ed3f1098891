"""What every layer of the engine uses: its one error type, content keys, owned temporary files.

- `errors`: `OfaError`, the one-line error every command prints as `error: ...` (exit 2);
- `keys`: content hashes (member keys of averaged models, example-set keys, file hashes);
- `tempfiles`: temporary paths named after their owner (host, PID), and the sweep of dead owners';
- `lazy`: package faces that import their modules on first use.
"""

from ofa_eval.common.errors import OfaError
from ofa_eval.common.keys import examples_key, file_sha256, member_key
from ofa_eval.common.tempfiles import remove_orphans, temporary_owner, temporary_path

__all__ = ["OfaError", "examples_key", "file_sha256", "member_key", "remove_orphans", "temporary_owner",
           "temporary_path"]
