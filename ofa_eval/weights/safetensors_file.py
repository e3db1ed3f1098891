"""Reading safetensors headers, without torch: where every tensor's bytes lie, checked against the file.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor name ->
dtype, shape and byte range relative to the data; optional `__metadata__` of strings), then
the data. Every malformed file is refused with a one-line OfaError naming the file: an absurd
or overlong header length, a header that is not a JSON object, a duplicated key, an unknown
dtype, a byte range that does not match dtype x shape, leaves the file (truncation) or overlaps
another, and data bytes that belong to no tensor (which the safetensors library refuses too).

Inputs are `.safetensors` files or model folders (holding `model.safetensors`, or a sharded
`model.safetensors.index.json` and its shards). Only the standard library is imported here, so
that ingest and other torch-free paths can check weight files.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ofa_eval.common.errors import OfaError

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000

# bits per element of every dtype code the safetensors library knows (F4 and F6 pack below a byte)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
                         "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2"})


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie: its file, dtype, shape and absolute byte range."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES


@dataclass
class Checkpoint:
    """The parsed headers of one input: its tensors, metadata and the files they live in."""

    source: Path
    entries: dict[str, TensorEntry]
    metadata: dict[str, str] | None
    header_bytes: dict[Path, int]

    @property
    def files(self) -> list[Path]:
        return list(self.header_bytes)


def dtype_size(dtype: str) -> int:
    """Bytes per element of a whole-byte safetensors dtype code; OfaError for others."""
    if dtype not in DTYPE_BITS:
        raise OfaError(f"unknown safetensors dtype {dtype}")
    if DTYPE_BITS[dtype] % 8:
        raise OfaError(f"safetensors dtype {dtype} packs {DTYPE_BITS[dtype]} bits per element, not whole bytes")
    return DTYPE_BITS[dtype] // 8


# ---------------------------------------------------------------------------------------------
# One file's header


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError(f"key '{next(k for k in keys if keys.count(k) > 1)}' appears twice")
    return dict(pairs)


def _header_length(path: Path, prefix: bytes, file_size: int) -> int:
    if len(prefix) < 8:
        raise OfaError(f"{path}: not a safetensors file (only {len(prefix)} bytes)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise OfaError(f"{path}: not a safetensors file (header length {length})")
    if length > file_size - 8:
        raise OfaError(f"{path}: truncated safetensors file ({file_size} bytes, the header alone needs {8 + length})")
    return length


def _parse_json(path: Path, raw: bytes) -> dict:
    try:
        header = json.loads(raw, object_pairs_hook=_refuse_duplicate_keys)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise OfaError(f"{path}: unreadable safetensors header ({error})") from None
    if not isinstance(header, dict):
        raise OfaError(f"{path}: unreadable safetensors header (a JSON {type(header).__name__}, not an object)")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and
                                     all(isinstance(value, str) for value in metadata.values())):
        raise OfaError(f"{path}: unreadable safetensors header (__metadata__ must map strings to strings)")
    return header


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def _parse_entry(path: Path, name: str, raw, data_start: int, data_size: int) -> TensorEntry:
    fields = raw if isinstance(raw, dict) else {}
    dtype, shape, offsets = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
    if not (isinstance(shape, list) and all(map(_is_count, shape)) and isinstance(offsets, list)
            and len(offsets) == 2 and all(map(_is_count, offsets)) and isinstance(dtype, str)):
        raise OfaError(f"{path}: malformed header entry for tensor '{name}' ({json.dumps(raw)[:200]})")
    if dtype not in DTYPE_BITS:
        raise OfaError(f"{path}: tensor '{name}' has unknown dtype {dtype}")
    (begin, end), bits = offsets, math.prod(shape) * DTYPE_BITS[dtype]
    if begin > end or bits % 8 or end - begin != bits // 8:
        raise OfaError(f"{path}: tensor '{name}' has byte range {begin}..{end}, inconsistent with {dtype} {shape}")
    if end > data_size:
        raise OfaError(f"{path}: truncated safetensors file ({data_start + data_size} bytes, tensor '{name}' "
                       f"ends at byte {data_start + end})")
    return TensorEntry(name, dtype, tuple(shape), path, data_start + begin, end - begin)


def _check_layout(path: Path, entries: dict[str, TensorEntry], data_start: int, file_size: int) -> None:
    """Every data byte belongs to exactly one tensor, as the safetensors library itself requires."""
    position, previous = data_start, None
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.nbytes)):
        if entry.start < position:
            raise OfaError(f"{path}: tensors '{previous.name}' and '{entry.name}' overlap in the file")
        if entry.start > position:
            raise OfaError(f"{path}: bytes {position}..{entry.start} belong to no tensor")
        position, previous = entry.start + entry.nbytes, entry
    if position != file_size:
        raise OfaError(f"{path}: {file_size - position} bytes after the last tensor's data belong to no tensor")


def read_header(path: Path) -> tuple[dict[str, str] | None, dict[str, TensorEntry], int]:
    """Parse and check one safetensors file's header: (metadata, entries by name, header length incl. prefix)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            file_size = handle.seek(0, 2)
            handle.seek(0)
            length = _header_length(path, handle.read(8), file_size)
            raw = handle.read(length)
    except OSError as error:
        raise OfaError(f"{path}: not a readable safetensors file ({error.strerror or error})") from None
    header = _parse_json(path, raw)
    metadata = header.pop("__metadata__", None)
    data_start = 8 + length
    entries = {name: _parse_entry(path, name, fields, data_start, file_size - data_start)
               for name, fields in header.items()}
    _check_layout(path, entries, data_start, file_size)
    return metadata, entries, data_start


# ---------------------------------------------------------------------------------------------
# Checkpoints: a file, a model folder or a sharded index


def _read_weight_map(index_path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise OfaError(f"{index_path}: unreadable shard index ({error!r})") from None
    if not (isinstance(weight_map, dict) and all(isinstance(shard, str) for shard in weight_map.values())):
        raise OfaError(f"{index_path}: unreadable shard index (weight_map must map tensor names to file names)")
    return weight_map


def _sharded_checkpoint(folder: Path, index_path: Path) -> Checkpoint:
    weight_map = _read_weight_map(index_path)
    entries, header_bytes, metadata = {}, {}, None
    for shard_name in dict.fromkeys(weight_map.values()):
        shard = folder / shard_name
        if not shard.is_file():
            raise OfaError(f"{index_path}: shard {shard_name} is missing")
        shard_metadata, shard_entries, header_bytes[shard] = read_header(shard)
        metadata = shard_metadata if metadata is None else metadata
        for name in shard_entries:
            if name in entries or weight_map.get(name) != shard_name:
                raise OfaError(f"{shard}: tensor '{name}' is duplicated or not mapped to this shard by the index")
        entries.update(shard_entries)
    missing = sorted(set(weight_map) - set(entries))
    if missing:
        raise OfaError(f"{index_path}: tensor '{missing[0]}' is in the index but not in its shard")
    return Checkpoint(folder, entries, metadata, header_bytes)


def open_checkpoint(path: Path) -> Checkpoint:
    """Parse the headers of a safetensors file or model folder (single-file or sharded)."""
    path = Path(path)
    if path.is_dir():
        if (path / SINGLE_FILE).is_file():
            path = path / SINGLE_FILE
        elif (path / SHARD_INDEX).is_file():
            return _sharded_checkpoint(path, path / SHARD_INDEX)
        else:
            raise OfaError(f"{path}: a model folder needs {SINGLE_FILE} or {SHARD_INDEX}")
    elif not path.is_file():
        raise OfaError(f"{path}: no such checkpoint file or folder")
    metadata, entries, header_length = read_header(path)
    return Checkpoint(path, entries, metadata, {path: header_length})


def storage_order(checkpoint: Checkpoint) -> list[TensorEntry]:
    """A checkpoint's tensors in the order their bytes lie on disk (file by file)."""
    file_rank = {path: rank for rank, path in enumerate(checkpoint.files)}
    return sorted(checkpoint.entries.values(), key=lambda e: (file_rank[e.file], e.start))


def iter_tensor_names(path: Path) -> Iterator[str]:
    """The tensor names of a checkpoint file or folder, in storage order, from its headers only."""
    yield from (entry.name for entry in storage_order(open_checkpoint(path)))
