"""Streaming weight averaging of safetensors checkpoints (accumulative model averaging).

Inputs are `.safetensors` files or model folders (holding `model.safetensors`, or a sharded
`model.safetensors.index.json` and its shards), read by `ofa_eval.weights.safetensors_file`. Averages are
accumulated in float32 (float64 for float64 tensors) and written in each tensor's input dtype with
the first input's metadata.

Memory stays bounded whatever the model size: tensors are processed one chunk of
`chunk_elements` values at a time, straight from the inputs' memory maps, and each chunk is
written as soon as it is summed (`ofa_eval.weights.streams`). One pass over the
inputs can write every prefix average 1..n at once (`accumulate_checkpoints`), reading each
input file exactly once.

Integer and bool tensors (position ids and the like) are not averaged: they must be equal in
every input and are copied. Every output is written to a temporary file beside it, named after
this process (`ofa_eval.common.tempfiles`), and moved into place only when all outputs are complete;
temporaries left there by killed runs are removed.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ofa_eval.common.errors import OfaError
from ofa_eval.weights.safetensors_file import SINGLE_FILE, Checkpoint, TensorEntry, dtype_size, open_checkpoint
from ofa_eval.weights.streams import (AtomicOutputs, ChunkWriter, InputReader, StreamingWriter, byte_view, output_order,
                                     torch_dtype)

# re-exported: the readers and the content hash of weight files, long imported from here
from ofa_eval.common.keys import file_sha256  # noqa: F401
from ofa_eval.weights.safetensors_file import iter_tensor_names  # noqa: F401
from ofa_eval.weights.streams import iter_tensors, read_tensor  # noqa: F401

DEFAULT_CHUNK_ELEMENTS = 1 << 20

ProgressCallback = Callable[[str], None]


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
    """OfaError naming the first tensor of an unsupported dtype, or whose name, dtype or shape differs between inputs."""
    reference = checkpoints[0]
    for entry in reference.entries.values():
        torch_dtype(entry)
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


def _write_scaled(chunks: ChunkWriter, writer: StreamingWriter, accumulator: torch.Tensor,
                  total_weight: float, out_dtype: torch.dtype) -> None:
    """Write accumulator / total_weight, rounded once to the tensor's own dtype; the accumulator is kept."""
    slot, scaled = chunks.slot(out_dtype, accumulator.numel(), writer.position)
    if total_weight == 1.0:
        scaled.copy_(accumulator)
    else:
        torch.div(accumulator, total_weight, out=scaled)
    chunks.write(writer, byte_view(scaled), slot)


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


class _ChunkSum:
    """The weighted sum of one chunk of one float tensor over the inputs added so far.

    For float32 and float64 tensors (the accumulator's own dtype) the sum lives in a write slot,
    so the last prefix is scaled in place and written from it. There, a first input of weight 1
    is only held as a view of its mapping: with a second one, both are added in one pass (not a
    copy, then an add), and a prefix that is just that input is written straight from the
    mapping, without a copy.
    """

    def __init__(self, entry: TensorEntry, start: int, count: int, buffers: _ChunkBuffers,
                 chunks: ChunkWriter, last_writer: StreamingWriter):
        self.entry, self.count, self.buffers, self.chunks = entry, count, buffers, chunks
        self.dtype = torch_dtype(entry)
        self.byte_offset, self.nbytes = start * self.dtype.itemsize, count * self.dtype.itemsize
        self.in_place = _accumulator_dtype(entry.dtype) == self.dtype
        self.last_writer = last_writer
        self.accumulator: torch.Tensor | None = None
        self.slot: torch.Tensor | None = None
        self.held: tuple[InputReader, torch.Tensor] | None = None
        self.total_weight = 0.0

    def _accumulator(self) -> torch.Tensor:
        if self.accumulator is None and self.in_place:
            self.slot, self.accumulator = self.chunks.slot(self.dtype, self.count, self.last_writer.position)
        elif self.accumulator is None:
            self.accumulator = self.buffers.get("accumulator", _accumulator_dtype(self.entry.dtype), self.count)
        return self.accumulator

    def _release(self, reader: InputReader) -> None:
        reader.release(self.entry.name, self.byte_offset, self.nbytes)

    def _settle(self) -> None:
        """Copy a held first input into the accumulator."""
        if self.held is not None:
            reader, view = self.held
            self._accumulator().copy_(view)
            self._release(reader)
            self.held = None

    def add(self, reader: InputReader, weight: float) -> None:
        view = reader.view(self.entry.name, self.byte_offset, self.dtype, self.count)
        if self.in_place and weight == 1.0 and self.total_weight == 0.0:
            self.held = (reader, view)
        elif self.held is not None and weight == 1.0:
            held_reader, held_view = self.held
            torch.add(held_view, view, out=self._accumulator())
            self._release(held_reader)
            self._release(reader)
            self.held = None
        else:
            self._settle()
            _accumulate(self._accumulator(), view, weight, self.total_weight == 0.0)
            self._release(reader)
        self.total_weight += weight

    def write(self, writer: StreamingWriter, last: bool) -> None:
        """Write the average so far (the sum over its weight) to `writer`; `last`: no input follows."""
        if self.held is not None:  # the average is that one input's chunk, unscaled
            reader = self.held[0]
            with reader.byte_range(self.entry.name, self.byte_offset, self.nbytes) as data:
                self.chunks.write(writer, data)
            if last:
                self._release(reader)
        elif last and self.in_place:
            if self.total_weight != 1.0:
                self.accumulator.div_(self.total_weight)
            self.chunks.write(writer, byte_view(self.accumulator), self.slot)
        else:
            _write_scaled(self.chunks, writer, self.accumulator, self.total_weight, self.dtype)


def _average_float_chunk(entry, start, count, readers, weights, writers, buffers, chunks) -> None:
    """Accumulate one chunk of one float tensor over every input, writing each requested prefix."""
    last = max(writers)
    chunk_sum = _ChunkSum(entry, start, count, buffers, chunks, writers[last])
    for position, (reader, weight) in enumerate(zip(readers[:last], weights)):
        if weight > 0:
            chunk_sum.add(reader, weight)
        if position + 1 in writers:
            chunk_sum.write(writers[position + 1], position + 1 == last)


def _average_float_tensor(entry, readers, weights, writers, buffers, chunks) -> None:
    for start in range(0, entry.numel, buffers.chunk_elements):
        count = min(buffers.chunk_elements, entry.numel - start)
        _average_float_chunk(entry, start, count, readers, weights, writers, buffers, chunks)


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
def torch_threads(count: int):
    """Torch's CPU threads set to `count` for the duration. Averaging runs on one: the adds are
    memory-bound, and torch's worker threads competed with the writes for the cores (measured
    twice as slow on 2 cores); tiny models predict and train fastest on one too."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_all(layout, readers, weights, writers, exact_copies, chunk_elements, progress) -> None:
    """Average every tensor into every writer, in layout order."""
    buffers = _ChunkBuffers(chunk_elements)
    chunks = ChunkWriter(_slot_bytes(layout, chunk_elements))
    for entry in layout:
        if entry.is_float:
            _average_float_tensor(entry, readers, weights, writers, buffers, chunks)
        else:
            for writer in writers.values():
                chunks.write(writer, memoryview(exact_copies[entry.name]))
        if progress is not None:
            progress(entry.name)


def _stream_average(checkpoints, destinations, weights, progress, chunk_elements, fsync) -> int:
    """The single pass: returns the bytes read. Outputs appear only if every one is complete."""
    layout = output_order(checkpoints[0].entries)
    readers = [InputReader(checkpoint) for checkpoint in checkpoints]
    try:
        exact_copies = _read_exact_tensors(layout, readers)
        with AtomicOutputs(list(destinations.values())) as handles:
            writers = {prefix: StreamingWriter(handle, layout, checkpoints[0].metadata)
                       for prefix, handle in zip(destinations, handles)}
            with torch_threads(1), warnings.catch_warnings():
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
