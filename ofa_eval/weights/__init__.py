"""Weights: safetensors files read and written in streams, and the averaging maths over them.

- `safetensors_file`: a torch-free header reader (single files and sharded checkpoints), shared
  by validation, scoring and averaging;
- `streams`: tensors read one at a time and written atomically (torch);
- `averaging`: averages and accumulative prefix averages of checkpoints in fp32 (torch).

`averaging` and `streams` import torch, so this face is lazy: `ofa_eval.weights.safetensors_file`
stays on the statistics path.
"""

from ofa_eval.common.lazy import lazy_face

__all__ = ["accumulate_checkpoints", "average_checkpoints", "open_checkpoint", "read_header", "write_prefix_averages"]
__getattr__, __dir__ = lazy_face(__name__, {
    "accumulate_checkpoints": "averaging", "average_checkpoints": "averaging", "write_prefix_averages": "averaging",
    "open_checkpoint": "safetensors_file", "read_header": "safetensors_file",
})
