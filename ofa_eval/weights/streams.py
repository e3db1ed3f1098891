"""Streaming safetensors I/O with torch: tensors read from the inputs, outputs written as they are made.

Inputs are memory-mapped and handed out as zero-copy views of tensor chunks, each chunk's pages
released from the process once used. Outputs, whose headers are known up front, are written
sequentially, chunk by chunk as they are made (`ChunkWriter`), into temporary files beside their
destinations (`AtomicOutputs`), moved into place with `os.replace` only when all are complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from ofa_eval.common.errors import OfaError
from ofa_eval.weights.safetensors_file import Checkpoint, TensorEntry, dtype_size, open_checkpoint, storage_order
from ofa_eval.common.tempfiles import remove_orphans, temporary_path

PAGE_BYTES = 4096
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux's value; Python adds the name in 3.13
TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "U16": torch.uint16,
                "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64, "U64": torch.uint64}


def torch_dtype(entry: TensorEntry) -> torch.dtype:
    """The torch dtype of a tensor; OfaError naming the file for dtypes ofa-eval does not handle (F8, F4, C64)."""
    if entry.dtype not in TORCH_DTYPES:
        raise OfaError(f"{entry.file}: tensor '{entry.name}' has dtype {entry.dtype}, which ofa-eval does not "
                       f"average or read (supported: {', '.join(TORCH_DTYPES)})")
    return TORCH_DTYPES[entry.dtype]


def byte_view(tensor: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor (works for bf16, which numpy lacks)."""
    return memoryview(tensor.view(torch.uint8).numpy()).cast("B")


# ---------------------------------------------------------------------------------------------
# Single tensors


def _read_exactly(fd: int, view: memoryview, offset: int, path: Path) -> int:
    """Fill `view` from `fd` at `offset`; OfaError when the file ends first. Returns bytes read."""
    done = 0
    while done < view.nbytes:
        count = os.preadv(fd, [view[done:]], offset + done)
        if count == 0:
            raise OfaError(f"{path}: file ends at byte {offset + done}, truncated safetensors file")
        done += count
    return done


def _load_entry(entry: TensorEntry) -> torch.Tensor:
    tensor = torch.empty(entry.shape, dtype=torch_dtype(entry))
    fd = os.open(entry.file, os.O_RDONLY)
    try:
        _read_exactly(fd, byte_view(tensor.reshape(-1)), entry.start, entry.file)
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
# Reading inputs


class InputReader:
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

    def byte_range(self, name: str, byte_offset: int, nbytes: int) -> memoryview:
        """A read-only, zero-copy view of `nbytes` bytes of tensor `name` from byte `byte_offset` on, for
        `write()` (not counted in `bytes_read`: `view` counts the values it hands out).

        Its pages are mapped first (MADV_POPULATE_READ, Linux 5.14+): the kernel copies a write's
        source without taking page faults, and on a missing page it stops, zero-fills the rest of
        the destination block and starts again, which costs more than the copy itself.
        """
        entry = self.checkpoint.entries[name]
        begin, mapping = entry.start + byte_offset, self.maps[entry.file]
        first_page = begin - begin % mmap.PAGESIZE
        with contextlib.suppress(OSError):  # an older kernel: the write faults the pages in itself
            mapping.madvise(MADV_POPULATE_READ, first_page, begin + nbytes - first_page)
        return memoryview(mapping)[begin: begin + nbytes]

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


# ---------------------------------------------------------------------------------------------
# Writing outputs


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


class StreamingWriter:
    """Writes a safetensors file sequentially: the header first, then the tensors' bytes in layout order."""

    def __init__(self, handle, layout: Sequence[TensorEntry], metadata: dict[str, str] | None):
        self.handle = handle
        header = _header_bytes(layout, metadata)
        self.expected = sum(entry.nbytes for entry in layout)
        self.written = 0
        self.position = len(header)  # the file position after every chunk written
        _preallocate(handle.fileno(), len(header) + self.expected)
        handle.write(header)

    def write(self, data: memoryview) -> None:
        done = 0
        while done < data.nbytes:
            done += self.handle.write(data[done:])
        self.written += done
        self.position += done

    def finish(self, fsync: bool) -> None:
        if self.written != self.expected:
            raise RuntimeError(f"wrote {self.written} data bytes, the header announces {self.expected}")
        if fsync:
            os.fsync(self.handle.fileno())
        self.handle.close()


class AtomicOutputs:
    """Temporary files beside each destination, moved into place together on success, removed on failure.

    Entering also removes the temporaries that killed writers left in the destination folders
    (`ofa_eval.common.tempfiles`).
    """

    def __init__(self, destinations: Sequence[Path]):
        self.destinations = list(destinations)
        self.temporaries: list[Path] = []
        self.handles = []

    def __enter__(self):
        try:
            for folder in dict.fromkeys(destination.parent for destination in self.destinations):
                folder.mkdir(parents=True, exist_ok=True)
                remove_orphans(folder)
            for destination in self.destinations:
                temporary = temporary_path(destination)
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


class ChunkWriter:
    """Writes output chunks, made in a few reused slots whose page offsets match the chunks' file positions.

    Writes happen on the calling thread. A background writer thread overlapping them with the
    adds was measured slower on 2 busy cores (`benchmarks/results/average-cpu.md`): the kernel's
    copy of a chunk that another core has just summed took about twice as long, and the thread
    competed with the adds for the cores.
    """

    def __init__(self, slot_bytes: int, n_slots: int = 2):
        self.free = [torch.empty(slot_bytes + PAGE_BYTES, dtype=torch.uint8) for _ in range(n_slots)]

    def slot(self, dtype: torch.dtype, count: int, file_position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A free slot (to give back through `write`) and a view of it for `count` values of `dtype`.

        The view sits at the same offset within its page as `file_position` does: the kernel's
        copies between user memory and the page cache are several times slower on some CPUs
        (AMD EPYC here) when the two offsets differ unluckily.
        """
        raw = self.free.pop()
        shift = (file_position - raw.data_ptr()) % PAGE_BYTES
        shift -= shift % dtype.itemsize
        return raw, raw[shift: shift + count * dtype.itemsize].view(dtype)

    def write(self, writer: StreamingWriter, data: memoryview, slot: torch.Tensor | None = None) -> None:
        """Write `data` to `writer`, then give `slot` (if any) back."""
        try:
            writer.write(data)
        finally:
            if slot is not None:
                self.free.append(slot)
