"""Streaming weight averaging of safetensors checkpoints (accumulative model averaging).

Inputs are `.safetensors` files or model folders (holding `model.safetensors`, or a sharded
`model.safetensors.index.json` and its shards). Averages are accumulated in float32 (float64 for
float64 tensors) and written in each tensor's input dtype with the first input's metadata.

Memory stays bounded whatever the model size: tensors are processed one chunk of
`chunk_elements` values at a time. Inputs are memory-mapped and added straight from the page
cache (no copy), each chunk's pages released from the process once added; outputs, whose headers
are known up front, are written chunk by chunk by a background thread while the next chunk is
summed. One pass over the inputs can write every prefix average 1..n at once
(`accumulate_checkpoints`), reading each input file exactly once.

Integer and bool tensors (position ids and the like) are not averaged: they must be equal in
every input and are copied. Every output is written to a temporary file beside it and moved into
place with `os.replace` only when all outputs are complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import mmap
import os
import queue
import secrets
import struct
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch

from ofa_eval.errors import OfaError
from ofa_eval.keys import file_sha256  # noqa: F401 - re-exported: content-hash cache keys of weight files

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
DEFAULT_CHUNK_ELEMENTS = 1 << 20
MAX_HEADER_BYTES = 100_000_000
PAGE_BYTES = 4096

FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
EXACT_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8}

ProgressCallback = Callable[[str], None]


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
        return self.dtype in FLOAT_DTYPES


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


@dataclass
class AverageReport:
    """What an averaging pass did: the files written, tensors, bytes read and wall time."""

    outputs: list[Path]
    n_tensors: int
    bytes_read: int
    seconds: float
    weights: tuple[float, ...] = field(default=())

    @property
    def output(self) -> Path:
        return self.outputs[-1]


# ---------------------------------------------------------------------------------------------
# Reading headers and single tensors


def dtype_size(dtype: str) -> int:
    """Bytes per element of a safetensors dtype code; OfaError for codes this module cannot handle."""
    if dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype].itemsize
    if dtype in EXACT_DTYPES:
        return EXACT_DTYPES[dtype]
    raise OfaError(f"unsupported safetensors dtype {dtype}")


def _parse_entry(path: Path, name: str, raw: dict, data_start: int, data_size: int) -> TensorEntry:
    try:
        dtype, shape, (begin, end) = raw["dtype"], tuple(int(d) for d in raw["shape"]), raw["data_offsets"]
    except (KeyError, TypeError, ValueError) as error:
        raise OfaError(f"{path}: malformed header entry for tensor '{name}' ({error!r})") from None
    if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * dtype_size(dtype):
        raise OfaError(f"{path}: tensor '{name}' has byte range {begin}..{end}, inconsistent with "
                       f"{dtype} {list(shape)} or the file size")
    return TensorEntry(name, dtype, shape, path, data_start + begin, end - begin)


def read_header(path: Path) -> tuple[dict[str, str] | None, dict[str, TensorEntry], int]:
    """Parse one safetensors file's header: (metadata, entries by name, header length incl. prefix)."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise OfaError(f"{path}: not a safetensors file (only {len(prefix)} bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, file_size - 8):
            raise OfaError(f"{path}: not a safetensors file (header length {length})")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise OfaError(f"{path}: unreadable safetensors header ({error})") from None
    metadata = header.pop("__metadata__", None)
    data_start = 8 + length
    entries = {name: _parse_entry(path, name, raw, data_start, file_size - data_start)
               for name, raw in header.items()}
    return metadata, entries, data_start


def _sharded_checkpoint(folder: Path, index_path: Path) -> Checkpoint:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise OfaError(f"{index_path}: unreadable shard index ({error!r})") from None
    entries, header_bytes, metadata = {}, {}, None
    for shard_name in sorted(set(weight_map.values()), key=list(weight_map.values()).index):
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


def _read_exactly(fd: int, view: memoryview, offset: int, path: Path) -> int:
    """Fill `view` from `fd` at `offset`; OfaError when the file ends first. Returns bytes read."""
    done = 0
    while done < view.nbytes:
        count = os.preadv(fd, [view[done:]], offset + done)
        if count == 0:
            raise OfaError(f"{path}: file ends at byte {offset + done}, truncated safetensors file")
        done += count
    return done


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype]
    return {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "U16": torch.uint16,
            "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64, "U64": torch.uint64}[dtype]


def _byte_view(tensor: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor (works for bf16, which numpy lacks)."""
    return memoryview(tensor.view(torch.uint8).numpy()).cast("B")


def _load_entry(entry: TensorEntry) -> torch.Tensor:
    tensor = torch.empty(entry.shape, dtype=_torch_dtype(entry.dtype))
    fd = os.open(entry.file, os.O_RDONLY)
    try:
        _read_exactly(fd, _byte_view(tensor.reshape(-1)), entry.start, entry.file)
    finally:
        os.close(fd)
    return tensor


def read_tensor(path: Path, name: str) -> torch.Tensor:
    """Read one tensor of a checkpoint file or folder, without touching the others."""
    checkpoint = open_checkpoint(path)
    if name not in checkpoint.entries:
        raise OfaError(f"{path}: no tensor named '{name}'")
    return _load_entry(checkpoint.entries[name])


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of a checkpoint, one tensor in memory at a time."""
    for entry in storage_order(open_checkpoint(path)):
        yield entry.name, _load_entry(entry)


# ---------------------------------------------------------------------------------------------
# Validation


def _first_name_mismatch(reference: Checkpoint, other: Checkpoint) -> str | None:
    for name in sorted(set(reference.entries) ^ set(other.entries)):
        if name in reference.entries:
            return f"{other.source}: tensor '{name}' is missing (it is in {reference.source})"
        return f"{other.source}: tensor '{name}' is not in {reference.source}"
    return None


def _first_entry_mismatch(reference: Checkpoint, other: Checkpoint) -> str | None:
    for name in sorted(reference.entries):
        mine, theirs = other.entries[name], reference.entries[name]
        if mine.dtype != theirs.dtype:
            return f"{other.source}: tensor '{name}' has dtype {mine.dtype}, {reference.source} has {theirs.dtype}"
        if mine.shape != theirs.shape:
            return (f"{other.source}: tensor '{name}' has shape {list(mine.shape)}, "
                    f"{reference.source} has {list(theirs.shape)}")
    return None


def check_compatible(checkpoints: Sequence[Checkpoint]) -> None:
    """OfaError naming the first tensor whose name, dtype or shape differs between inputs."""
    reference = checkpoints[0]
    for entry in reference.entries.values():
        dtype_size(entry.dtype)
    for other in checkpoints[1:]:
        problem = _first_name_mismatch(reference, other) or _first_entry_mismatch(reference, other)
        if problem:
            raise OfaError(problem)


def normalise_weights(weights: Sequence[float] | None, n_inputs: int) -> tuple[float, ...]:
    """Weights summing to 1 (uniform when None); OfaError for a wrong count, negative or all-zero ones."""
    if weights is None:
        return (1.0 / n_inputs,) * n_inputs
    weights = tuple(float(w) for w in weights)
    if len(weights) != n_inputs:
        raise OfaError(f"{len(weights)} weights for {n_inputs} inputs")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise OfaError(f"weights must be finite and non-negative, got {list(weights)}")
    total = sum(weights)
    if total <= 0:
        raise OfaError("the weights are all zero")
    return tuple(w / total for w in weights)


def _accumulation_weights(normalised: tuple[float, ...]) -> tuple[float, ...]:
    """Uniform weights accumulate as plain sums (exactly numpy's mean); others as given."""
    return (1.0,) * len(normalised) if len(set(normalised)) == 1 else normalised


# ---------------------------------------------------------------------------------------------
# Reading inputs and writing outputs


class _InputReader:
    """One input's files, each opened once and memory-mapped; hands out zero-copy views of tensor chunks.

    Reading through the mapping skips the copy out of the page cache that `read()` makes (the
    average then runs at the speed of one read). Used chunks are released (`madvise`
    MADV_DONTNEED) so mapped pages never pile up in the process's resident memory.
    """

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.maps: dict[Path, mmap.mmap] = {}
        for path in checkpoint.files:
            fd = os.open(path, os.O_RDONLY)
            try:
                self.maps[path] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
        self.bytes_read = sum(checkpoint.header_bytes.values())

    def view(self, name: str, byte_offset: int, dtype: torch.dtype, count: int) -> torch.Tensor:
        """`count` values of tensor `name` from byte `byte_offset` on, without copying them."""
        entry = self.checkpoint.entries[name]
        self.bytes_read += count * dtype.itemsize
        return torch.frombuffer(self.maps[entry.file], dtype=dtype, count=count, offset=entry.start + byte_offset)

    def raw_bytes(self, name: str) -> bytes:
        entry = self.checkpoint.entries[name]
        self.bytes_read += entry.nbytes
        return self.maps[entry.file][entry.start: entry.start + entry.nbytes]

    def release(self, name: str, byte_offset: int, nbytes: int) -> None:
        """Drop the pages of a used chunk from this process (the page cache keeps them)."""
        entry = self.checkpoint.entries[name]
        begin = entry.start + byte_offset
        first_page = begin - begin % mmap.PAGESIZE
        self.maps[entry.file].madvise(mmap.MADV_DONTNEED, first_page, begin + nbytes - first_page)

    def close(self) -> None:
        for mapping in self.maps.values():
            try:
                mapping.close()
            except BufferError:  # a view is still referenced (an exception's traceback): the GC unmaps it
                pass
        self.maps.clear()


def output_order(entries: Mapping[str, TensorEntry]) -> list[TensorEntry]:
    """safetensors' own order: widest dtype first, then by name, so every tensor stays aligned."""
    return sorted(entries.values(), key=lambda e: (-dtype_size(e.dtype), e.name))


def _header_bytes(layout: Sequence[TensorEntry], metadata: dict[str, str] | None) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for entry in layout:
        header[entry.name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded


def _preallocate(fd: int, size: int) -> None:
    """Reserve a file's blocks up front with fallocate(2): on ext4 the writes that follow run about
    three times faster. Skipped where the call is missing or unsupported (no zero-filling fallback,
    unlike posix_fallocate)."""
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if fallocate(fd, 0, 0, size) != 0 and ctypes.get_errno() == errno.ENOSPC:
        raise OfaError(f"no space left on the device for a {size / 1e9:.2f} GB output")


class _StreamingWriter:
    """Writes a safetensors file sequentially: the header first, then the tensors' bytes in layout order."""

    def __init__(self, handle, layout: Sequence[TensorEntry], metadata: dict[str, str] | None):
        self.handle = handle
        header = _header_bytes(layout, metadata)
        self.expected = sum(entry.nbytes for entry in layout)
        self.written = 0
        self.queued = len(header)  # the file position after every chunk handed to the write queue
        _preallocate(handle.fileno(), len(header) + self.expected)
        handle.write(header)

    def write(self, data: memoryview) -> None:
        done = 0
        while done < data.nbytes:
            done += self.handle.write(data[done:])
        self.written += done

    def finish(self, fsync: bool) -> None:
        if self.written != self.expected:
            raise RuntimeError(f"wrote {self.written} data bytes, the header announces {self.expected}")
        if fsync:
            os.fsync(self.handle.fileno())
        self.handle.close()


class _AtomicOutputs:
    """Temporary files beside each destination, moved into place together on success, removed on failure."""

    def __init__(self, destinations: Sequence[Path]):
        self.destinations = list(destinations)
        self.temporaries: list[Path] = []
        self.handles = []

    def __enter__(self):
        try:
            for destination in self.destinations:
                destination.parent.mkdir(parents=True, exist_ok=True)
                temporary = destination.with_name(f".{destination.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
                self.temporaries.append(temporary)
                self.handles.append(os.fdopen(fd, "wb", buffering=0))
        except BaseException:
            self._discard()
            raise
        return self.handles

    def _discard(self) -> None:
        for handle in self.handles:
            handle.close()
        for temporary in self.temporaries:
            temporary.unlink(missing_ok=True)

    def __exit__(self, error_type, error, traceback):
        if error_type is not None:
            self._discard()
            return False
        for temporary, destination in zip(self.temporaries, self.destinations):
            os.replace(temporary, destination)
        return False


class _WriteQueue:
    """A background thread writing output chunks, so that writing overlaps reading and adding.

    Chunks are handed over in a few reused slots; `slot()` blocks while every slot is queued,
    which bounds the memory in flight. A write error is raised in the main thread.
    """

    def __init__(self, slot_bytes: int, n_slots: int = 4):
        self.free: queue.Queue = queue.Queue()
        for _ in range(n_slots):
            self.free.put(torch.empty(slot_bytes + PAGE_BYTES, dtype=torch.uint8))
        self.jobs: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ofa-eval-average-writer", daemon=True)
        self.thread.start()

    def slot(self, dtype: torch.dtype, count: int, file_position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A free slot (to give back through `put`) and a view of it for `count` values of `dtype`.

        The view sits at the same offset within its page as `file_position` does: the kernel's
        copies between user memory and the page cache are several times slower on some CPUs
        (AMD EPYC here) when the two offsets differ unluckily.
        """
        self.raise_error()
        raw = self.free.get()
        shift = (file_position - raw.data_ptr()) % PAGE_BYTES
        shift -= shift % dtype.itemsize
        return raw, raw[shift: shift + count * dtype.itemsize].view(dtype)

    def put(self, writer: _StreamingWriter, data: memoryview, slot: torch.Tensor | None = None) -> None:
        writer.queued += data.nbytes
        self.jobs.put((writer, data, slot))

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            writer, data, slot = job
            try:
                if self.error is None:
                    writer.write(data)
            except BaseException as error:  # handed to the main thread by raise_error
                self.error = error
            finally:
                if slot is not None:
                    self.free.put(slot)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Wait until every queued chunk is written."""
        self.jobs.put(None)
        self.thread.join()


# ---------------------------------------------------------------------------------------------
# Averaging


class _ChunkBuffers:
    """The reused float accumulators, one chunk each."""

    def __init__(self, chunk_elements: int):
        self.chunk_elements = chunk_elements
        self.buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, role: str, dtype: torch.dtype, count: int) -> torch.Tensor:
        buffer = self.buffers.get((role, dtype))
        if buffer is None or buffer.numel() < count:
            buffer = torch.empty(count, dtype=dtype)
            self.buffers[(role, dtype)] = buffer
        return buffer[:count]


def _accumulator_dtype(dtype: str) -> torch.dtype:
    return torch.float64 if dtype == "F64" else torch.float32


def _slot_bytes(layout: Sequence[TensorEntry], chunk_elements: int) -> int:
    return max((min(e.numel, chunk_elements) * dtype_size(e.dtype) for e in layout if e.is_float), default=0)


def _write_scaled(write_queue: _WriteQueue, writer: _StreamingWriter, accumulator: torch.Tensor,
                  total_weight: float, out_dtype: torch.dtype) -> None:
    """Queue accumulator / total_weight, rounded once to the tensor's own dtype; the accumulator is kept."""
    slot, scaled = write_queue.slot(out_dtype, accumulator.numel(), writer.queued)
    if total_weight == 1.0:
        scaled.copy_(accumulator)
    else:
        torch.div(accumulator, total_weight, out=scaled)
    write_queue.put(writer, _byte_view(scaled), slot)


def _accumulate(accumulator: torch.Tensor, chunk: torch.Tensor, weight: float, first: bool) -> None:
    """accumulator (+)= weight * chunk; a weight of 1 adds exactly, as numpy's sum does."""
    if first and weight == 1.0:
        accumulator.copy_(chunk)
    elif first:
        torch.mul(chunk, weight, out=accumulator)
    elif weight == 1.0:
        accumulator.add_(chunk)
    else:
        accumulator.add_(chunk, alpha=weight)


def _average_float_chunk(entry, start, count, readers, weights, writers, buffers, write_queue) -> None:
    """Accumulate one chunk of one float tensor over every input, writing each requested prefix.

    When the tensor's dtype is the accumulator's (float32, float64), the sum is accumulated in a
    write slot and the last prefix is scaled in place and written from it: one pass less.
    """
    in_dtype, last = FLOAT_DTYPES[entry.dtype], max(writers)
    in_place = _accumulator_dtype(entry.dtype) == in_dtype
    if in_place:
        slot, accumulator = write_queue.slot(in_dtype, count, writers[last].queued)
    else:
        accumulator = buffers.get("accumulator", _accumulator_dtype(entry.dtype), count)
    byte_offset, total_weight, started = start * in_dtype.itemsize, 0.0, False
    for position, (reader, weight) in enumerate(zip(readers[:last], weights)):
        if weight > 0:
            _accumulate(accumulator, reader.view(entry.name, byte_offset, in_dtype, count), weight, not started)
            reader.release(entry.name, byte_offset, count * in_dtype.itemsize)
            total_weight, started = total_weight + weight, True
        if position + 1 == last and in_place:
            if total_weight != 1.0:
                accumulator.div_(total_weight)
            write_queue.put(writers[last], _byte_view(accumulator), slot)
        elif position + 1 in writers:
            _write_scaled(write_queue, writers[position + 1], accumulator, total_weight, in_dtype)


def _average_float_tensor(entry, readers, weights, writers, buffers, write_queue) -> None:
    for start in range(0, entry.numel, buffers.chunk_elements):
        count = min(buffers.chunk_elements, entry.numel - start)
        _average_float_chunk(entry, start, count, readers, weights, writers, buffers, write_queue)


def _read_exact_tensors(layout, readers) -> dict[str, bytes]:
    """The integer/bool tensors of the first input; OfaError naming one that another input differs in."""
    copies = {}
    for entry in layout:
        if entry.is_float:
            continue
        first = None
        for reader in readers:
            data = reader.raw_bytes(entry.name)
            if first is None:
                first = data
            elif data != first:
                raise OfaError(f"{reader.checkpoint.source}: {entry.dtype} tensor '{entry.name}' differs from "
                               f"{readers[0].checkpoint.source} (integer and bool tensors are copied, not "
                               f"averaged, so they must be equal in every input)")
        copies[entry.name] = first
    return copies


def _check_prefix_weights(weights: Sequence[float], prefixes: Sequence[int]) -> None:
    for prefix in prefixes:
        if not 1 <= prefix <= len(weights):
            raise OfaError(f"prefix {prefix} is outside 1..{len(weights)}")
        if sum(weights[:prefix]) <= 0:
            raise OfaError(f"the first {prefix} input(s) all have weight zero, so their average is undefined")


def _check_not_overwriting_inputs(checkpoints: Sequence[Checkpoint], destinations: Sequence[Path]) -> None:
    inputs = {path.resolve() for checkpoint in checkpoints for path in checkpoint.files}
    for destination in destinations:
        if destination.resolve() in inputs:
            raise OfaError(f"{destination}: the output would overwrite one of the inputs")


@contextlib.contextmanager
def _one_torch_thread():
    """Run torch ops on the calling thread only: the adds are memory-bound, and torch's worker
    threads would compete for the cores with the background writer (measured twice as slow)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_all(layout, readers, weights, writers, exact_copies, chunk_elements, progress) -> None:
    """Average every tensor into every writer, in layout order, writing in the background."""
    buffers = _ChunkBuffers(chunk_elements)
    write_queue = _WriteQueue(_slot_bytes(layout, chunk_elements))
    try:
        for entry in layout:
            if entry.is_float:
                _average_float_tensor(entry, readers, weights, writers, buffers, write_queue)
            else:
                for writer in writers.values():
                    write_queue.put(writer, memoryview(exact_copies[entry.name]))
            if progress is not None:
                progress(entry.name)
    finally:
        write_queue.close()
    write_queue.raise_error()


def _stream_average(checkpoints, destinations, weights, progress, chunk_elements, fsync) -> int:
    """The single pass: returns the bytes read. Outputs appear only if every one is complete."""
    layout = output_order(checkpoints[0].entries)
    readers = [_InputReader(checkpoint) for checkpoint in checkpoints]
    try:
        exact_copies = _read_exact_tensors(layout, readers)
        with _AtomicOutputs(list(destinations.values())) as handles:
            writers = {prefix: _StreamingWriter(handle, layout, checkpoints[0].metadata)
                       for prefix, handle in zip(destinations, handles)}
            with _one_torch_thread(), warnings.catch_warnings():
                # views of the read-only mappings are only ever read; torch warns (once) all the same
                warnings.filterwarnings("ignore", message="The given buffer is not writable")
                _write_all(layout, readers, weights, writers, exact_copies, chunk_elements, progress)
            for writer in writers.values():
                writer.finish(fsync)
        return sum(reader.bytes_read for reader in readers)
    finally:
        for reader in readers:
            reader.close()


def write_prefix_averages(inputs: Sequence[Path], destinations: Mapping[int, Path],
                          weights: Sequence[float] | None = None, *, progress: ProgressCallback | None = None,
                          chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, fsync: bool = False) -> AverageReport:
    """Write the average of inputs[:k] to destinations[k] for each k, in one pass over the inputs.

    Prefix k is weighted by weights[:k] renormalised to sum 1. Each input file is opened and read
    once; headers, names, dtypes, shapes and integer tensors are all checked before any output
    file is created. `progress(name)` is called after each tensor; `fsync` flushes the outputs
    to disk before they are moved into place.
    """
    if sys.byteorder != "little":
        raise OfaError("averaging needs a little-endian machine (safetensors data is little-endian)")
    if not inputs or not destinations:
        raise OfaError("nothing to average" if not inputs else "no output to write")
    began = time.perf_counter()
    normalised = normalise_weights(weights, len(inputs))
    _check_prefix_weights(normalised, list(destinations))
    checkpoints = [open_checkpoint(Path(path)) for path in inputs]
    check_compatible(checkpoints)
    destinations = {prefix: Path(destinations[prefix]) for prefix in sorted(destinations)}
    _check_not_overwriting_inputs(checkpoints, list(destinations.values()))
    bytes_read = _stream_average(checkpoints, destinations, _accumulation_weights(normalised), progress,
                                 chunk_elements, fsync)
    return AverageReport(list(destinations.values()), len(checkpoints[0].entries), bytes_read,
                         time.perf_counter() - began, normalised)


def average_checkpoints(inputs: Sequence[Path], output: Path, weights: Sequence[float] | None = None,
                        **options) -> AverageReport:
    """Average checkpoints (uniformly, or by weights normalised to sum 1) into one safetensors file.

    An existing folder as `output` receives `model.safetensors`. Options: those of
    `write_prefix_averages` (progress, chunk_elements, fsync).
    """
    output = Path(output)
    if output.is_dir():
        output = output / SINGLE_FILE
    return write_prefix_averages(inputs, {len(inputs): output}, weights, **options)


def prefix_file_name(prefix: int, n_inputs: int) -> str:
    """`prefix-01.safetensors` ...; zero-padded to at least two digits so names sort in order."""
    return f"prefix-{prefix:0{max(2, len(str(n_inputs)))}d}.safetensors"


def accumulate_checkpoints(inputs: Sequence[Path], output_dir: Path, weights: Sequence[float] | None = None,
                           **options) -> list[Path]:
    """Write every running average (prefix k = average of inputs[:k]) into output_dir, in one pass."""
    return accumulate_with_report(inputs, output_dir, weights, **options).outputs


def accumulate_with_report(inputs: Sequence[Path], output_dir: Path, weights: Sequence[float] | None = None,
                           **options) -> AverageReport:
    """`accumulate_checkpoints`, returning the full report (outputs, tensors, bytes read, seconds)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OfaError(f"{output_dir}: --accumulate writes a folder of prefix files, and this is a file")
    destinations = {k: output_dir / prefix_file_name(k, len(inputs)) for k in range(1, len(inputs) + 1)}
    return write_prefix_averages(inputs, destinations, weights, **options)
