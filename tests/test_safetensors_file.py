"""The torch-free safetensors reader (`ofa_eval.weights.safetensors_file`) against the safetensors library itself."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ofa_eval.common.errors import OfaError
from ofa_eval.artifacts.scoring import check_safetensors
from ofa_eval.weights.safetensors_file import open_checkpoint, read_header, storage_order

NUMPY_CODES = {np.float32: "F32", np.float16: "F16", np.float64: "F64", np.int64: "I64", np.uint8: "U8", np.bool_: "BOOL"}


def write_raw(path: Path, header, data: bytes = b"", *, raw_header: bytes | None = None, length: int | None = None):
    encoded = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


def f32(begin: int, n: int) -> dict:
    return {"dtype": "F32", "shape": [n], "data_offsets": [begin, begin + 4 * n]}


def test_entries_match_the_safetensors_library(tmp_path):
    rng = np.random.default_rng(0)
    state = {"w": rng.standard_normal((3, 5)).astype(np.float32), "h": rng.standard_normal(7).astype(np.float16),
             "d": rng.standard_normal(2).astype(np.float64), "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
             "mask": np.array([True, False, True]), "bytes": np.arange(5, dtype=np.uint8),
             "empty": np.zeros((0, 4), dtype=np.float32)}
    path = tmp_path / "model.safetensors"
    save_file(state, path, metadata={"format": "np"})
    checkpoint = open_checkpoint(tmp_path)  # a model folder holding model.safetensors
    content = path.read_bytes()
    with safe_open(path, "np") as handle:
        assert checkpoint.metadata == handle.metadata()
        assert sorted(checkpoint.entries) == sorted(handle.keys())
        for name in handle.keys():
            entry, tensor = checkpoint.entries[name], handle.get_tensor(name)
            assert entry.shape == tensor.shape and entry.dtype == NUMPY_CODES[tensor.dtype.type]
            assert content[entry.start: entry.start + entry.nbytes] == tensor.tobytes()
    starts = [entry.start for entry in storage_order(checkpoint)]
    assert starts == sorted(starts)


MALFORMED = {
    "too short": (lambda p: p.write_bytes(b"\x01\x02\x03"), "not a safetensors file (only 3 bytes)"),
    "absurd header length": (lambda p: write_raw(p, {"a": f32(0, 2)}, bytes(8), length=0xFFFFFFFFFFFFFFFF),
                             "header length 18446744073709551615"),
    "header longer than the file": (lambda p: write_raw(p, {"a": f32(0, 2)}, length=1000), "truncated"),
    "not JSON": (lambda p: write_raw(p, None, raw_header=b"{not json}"), "unreadable safetensors header"),
    "not UTF-8": (lambda p: write_raw(p, None, raw_header=b'{"\xff": 1}'), "unreadable safetensors header"),
    "not an object": (lambda p: write_raw(p, [1, 2]), "a JSON list, not an object"),
    "duplicated name": (lambda p: write_raw(p, None, bytes(16), raw_header=json.dumps(
        {"a": f32(0, 2)})[:-1].encode() + b',"a":' + json.dumps(f32(8, 2)).encode() + b"}"), "'a' appears twice"),
    "metadata not strings": (lambda p: write_raw(p, {"__metadata__": {"k": 1}, "a": f32(0, 2)}, bytes(8)),
                             "__metadata__"),
    "entry without offsets": (lambda p: write_raw(p, {"a": {"dtype": "F32", "shape": [2]}}, bytes(8)),
                              "malformed header entry for tensor 'a'"),
    "negative shape": (lambda p: write_raw(p, {"a": {"dtype": "F32", "shape": [-1, -2], "data_offsets": [0, 8]}},
                                           bytes(8)), "malformed header entry for tensor 'a'"),
    "unknown dtype": (lambda p: write_raw(p, {"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
                      "unknown dtype Q9"),
    "range not dtype x shape": (lambda p: write_raw(p, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                                    bytes(8)), "inconsistent with F32 [3]"),
    "range past the end": (lambda p: write_raw(p, {"a": f32(0, 2), "b": f32(8, 4)}, bytes(16)),
                           "truncated safetensors file"),
    "overlapping ranges": (lambda p: write_raw(p, {"a": f32(0, 2), "b": f32(4, 2)}, bytes(12)), "overlap"),
    "bytes of no tensor": (lambda p: write_raw(p, {"a": f32(0, 2), "b": f32(12, 1)}, bytes(16)), "belong to no tensor"),
    "trailing bytes": (lambda p: write_raw(p, {"a": f32(0, 2)}, bytes(12)), "belong to no tensor"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_are_refused_in_one_line_naming_the_file(tmp_path, case):
    make, fragment = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(SafetensorError):  # the reference: the safetensors library refuses the file too
        with safe_open(path, "np") as handle:
            handle.keys()
    for read in (read_header, open_checkpoint, lambda p: check_safetensors(p, None)):
        with pytest.raises(OfaError) as raised:
            read(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and fragment in message, message


def test_sub_byte_and_float8_dtypes_are_read(tmp_path):
    header = {"f4": {"dtype": "F4", "shape": [4, 4], "data_offsets": [0, 8]},
              "f8": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [8, 16]}}
    path = write_raw(tmp_path / "low-precision.safetensors", header, bytes(16))
    with safe_open(path, "np") as handle:  # the reference accepts it, so must ingest
        assert sorted(handle.keys()) == ["f4", "f8"]
    _, entries, _ = read_header(path)
    assert (entries["f4"].nbytes, entries["f8"].nbytes) == (8, 8)
    check_safetensors(path, path.stat().st_size)


def test_sharded_index_must_map_names_to_files(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a", "b"]}))
    with pytest.raises(OfaError, match="index.json: unreadable shard index"):
        open_checkpoint(folder)


def test_ingest_check_keeps_its_meaning(tmp_path):
    path = tmp_path / "snapshot-01.safetensors"
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, path)
    check_safetensors(path, path.stat().st_size)
    with pytest.raises(OfaError, match="the manifest says 12"):
        check_safetensors(path, 12)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(OfaError, match="snapshot-01.safetensors: truncated safetensors file"):
        check_safetensors(path, None)
    with pytest.raises(OfaError, match="missing.safetensors: not a readable safetensors file"):
        check_safetensors(tmp_path / "missing.safetensors", None)


def test_importing_the_reader_imports_neither_torch_nor_numpy():
    code = ("import sys, ofa_eval.weights.safetensors_file, ofa_eval.common.tempfiles; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd=Path(__file__).resolve().parents[1])
    assert completed.stdout.strip() == "[]"
