"""Streaming weight averaging (`ofa_eval.weights.averaging`, `ofa-eval average`) against plain numpy means."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ofa_eval.weights.averaging import (accumulate_checkpoints, accumulate_with_report, average_checkpoints, file_sha256,
                                iter_tensor_names, iter_tensors, read_tensor, write_prefix_averages)
from ofa_eval.commands.average import average
from ofa_eval.common.errors import OfaError

SHAPES = {"encoder.layer.0.weight": (64, 48), "encoder.layer.0.bias": (48,), "classifier.weight": (3, 48),
          "embeddings.word": (300, 16)}
SMALL_CHUNK = 1000  # smaller than most tensors, so chunk boundaries are exercised


def random_state(seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator).to(dtype) for name, shape in SHAPES.items()}
    state["embeddings.position_ids"] = torch.arange(12).unsqueeze(0)
    return state


def write_inputs(folder: Path, n: int, dtype=torch.float32) -> list[Path]:
    paths = []
    for seed in range(n):
        path = folder / f"run-{seed}.safetensors"
        save_file(random_state(seed, dtype), path, metadata={"format": "pt", "seed": str(seed)})
        paths.append(path)
    return paths


def numpy_mean(paths, name, weights=None) -> np.ndarray:
    """The reference: every input loaded independently, as float32 numpy, averaged by numpy."""
    stacked = np.stack([load_file(path)[name].float().numpy() for path in paths])
    if weights is None:
        return stacked.mean(axis=0, dtype=np.float32)
    total = np.float32(sum(weights))
    return sum(np.float32(weight) / total * array for weight, array in zip(weights, stacked))


def max_diff(result: torch.Tensor, reference: np.ndarray) -> float:
    expected = torch.from_numpy(reference).to(result.dtype)
    return (result.double() - expected.double()).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weights", [None, [0.5, 0.25, 0.125, 0.125]])
def test_average_matches_numpy_mean(tmp_path, dtype, weights):
    paths = write_inputs(tmp_path, 4, dtype)
    report = average_checkpoints(paths, tmp_path / "avg.safetensors", weights, chunk_elements=SMALL_CHUNK)
    result = load_file(report.output)
    for name in SHAPES:
        assert result[name].dtype == dtype
        assert max_diff(result[name], numpy_mean(paths, name, weights)) <= 1e-6, name
    assert torch.equal(result["embeddings.position_ids"], torch.arange(12).unsqueeze(0))
    assert report.n_tensors == len(SHAPES) + 1


def test_unnormalised_weights_and_metadata(tmp_path):
    paths = write_inputs(tmp_path, 3)
    report = average_checkpoints(paths, tmp_path / "avg.safetensors", [3, 1, 0])
    assert report.weights == (0.75, 0.25, 0.0)
    result = load_file(report.output)
    for name in SHAPES:
        assert max_diff(result[name], numpy_mean(paths, name, [3, 1, 0])) <= 1e-6
    with safe_open(report.output, "pt") as handle:
        assert handle.metadata() == {"format": "pt", "seed": "0"}


def test_float16_and_single_input(tmp_path):
    paths = write_inputs(tmp_path, 1, torch.float16)
    report = average_checkpoints(paths, tmp_path / "copy.safetensors")
    original, copy = load_file(paths[0]), load_file(report.output)
    assert all(torch.equal(original[name], copy[name]) for name in original)


def test_float64_is_accumulated_in_float64(tmp_path):
    paths = write_inputs(tmp_path, 3, torch.float64)
    result = load_file(average_checkpoints(paths, tmp_path / "avg.safetensors").output)
    expected = np.stack([load_file(path)["classifier.weight"].numpy() for path in paths]).mean(axis=0)
    assert result["classifier.weight"].dtype == torch.float64
    assert np.abs(result["classifier.weight"].numpy() - expected).max() <= 1e-15


def test_accumulate_prefixes_read_each_input_once(tmp_path, monkeypatch):
    paths = write_inputs(tmp_path, 5)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open",
                        lambda path, flags, *args: (opened.append(Path(path)), real_open(path, flags, *args))[1])
    report = accumulate_with_report(paths, tmp_path / "prefixes", chunk_elements=SMALL_CHUNK)
    input_opens = [path for path in opened if path in paths]
    assert sorted(input_opens) == sorted(paths)  # the data pass opens each input once
    assert report.bytes_read == sum(path.stat().st_size for path in paths)  # and reads every byte once
    assert [p.name for p in report.outputs] == [f"prefix-0{k}.safetensors" for k in range(1, 6)]
    for k, output in enumerate(report.outputs, start=1):
        result = load_file(output)
        for name in SHAPES:
            assert max_diff(result[name], numpy_mean(paths[:k], name)) <= 1e-6, (k, name)


def test_accumulate_weighted_returns_paths(tmp_path):
    paths = write_inputs(tmp_path, 3, torch.bfloat16)
    weights = [0.25, 0.25, 0.5]  # dyadic for every prefix, so bf16 rounding of the mean is reproducible
    outputs = accumulate_checkpoints(paths, tmp_path / "prefixes", weights)
    for k, output in enumerate(outputs, start=1):
        result = load_file(output)
        for name in SHAPES:
            assert max_diff(result[name], numpy_mean(paths[:k], name, weights[:k])) <= 1e-6, (k, name)


def test_selected_prefixes_only(tmp_path):
    paths = write_inputs(tmp_path, 4)
    report = write_prefix_averages(paths, {2: tmp_path / "two.safetensors", 4: tmp_path / "four.safetensors"})
    assert max_diff(load_file(report.outputs[0])["classifier.weight"],
                    numpy_mean(paths[:2], "classifier.weight")) <= 1e-6
    assert max_diff(load_file(report.outputs[1])["classifier.weight"],
                    numpy_mean(paths, "classifier.weight")) <= 1e-6


def write_sharded(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    for shard, shard_names in shards.items():
        save_file({name: state[name] for name in shard_names}, folder / shard, metadata={"format": "pt"})
    weight_map = {name: shard for shard, shard_names in shards.items() for name in shard_names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_sharded_and_folder_inputs(tmp_path):
    sharded = write_sharded(tmp_path / "sharded", random_state(0))
    single = tmp_path / "single"
    single.mkdir()
    save_file(random_state(1), single / "model.safetensors")
    plain = write_inputs(tmp_path, 3)
    output_folder = tmp_path / "out"
    output_folder.mkdir()
    report = average_checkpoints([sharded, single, plain[2]], output_folder)
    assert report.output == output_folder / "model.safetensors"
    for name in SHAPES:
        assert max_diff(load_file(report.output)[name], numpy_mean(plain, name)) <= 1e-6
    assert sorted(iter_tensor_names(sharded)) == sorted(random_state(0))
    assert all(torch.equal(tensor, random_state(0)[name]) for name, tensor in iter_tensors(sharded))
    assert torch.equal(read_tensor(sharded, "classifier.weight"), random_state(0)["classifier.weight"])


def mismatching_state(kind: str) -> dict[str, torch.Tensor]:
    state = random_state(1)
    if kind == "name":
        state["extra.weight"] = torch.zeros(2)
    elif kind == "missing":
        del state["classifier.weight"]
    elif kind == "shape":
        state["classifier.weight"] = torch.zeros(4, 48)
    elif kind == "dtype":
        state["classifier.weight"] = state["classifier.weight"].half()
    elif kind == "int":
        state["embeddings.position_ids"] = torch.arange(1, 13).unsqueeze(0)
    return state


@pytest.mark.parametrize("kind, tensor, words", [
    ("name", "extra.weight", "is not in"),
    ("missing", "classifier.weight", "is missing"),
    ("shape", "classifier.weight", "shape [4, 48]"),
    ("dtype", "classifier.weight", "dtype F16"),
    ("int", "embeddings.position_ids", "differs"),
])
def test_mismatches_are_refused_and_nothing_is_written(tmp_path, kind, tensor, words):
    good = write_inputs(tmp_path, 1)[0]
    bad = tmp_path / "bad.safetensors"
    save_file(mismatching_state(kind), bad)
    for call in (lambda: average_checkpoints([good, bad], tmp_path / "out" / "avg.safetensors"),
                 lambda: accumulate_checkpoints([good, bad], tmp_path / "out")):
        with pytest.raises(OfaError) as raised:
            call()
        message = str(raised.value)
        assert "\n" not in message and f"'{tensor}'" in message and words in message and "bad.safetensors" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dtypes_that_are_not_averaged_are_refused_naming_the_file(tmp_path):
    state = random_state(0)
    state["quantised.weight"] = torch.zeros(4, dtype=torch.float8_e4m3fn)
    low_precision = tmp_path / "fp8.safetensors"
    save_file(state, low_precision)
    with pytest.raises(OfaError, match=r"fp8.safetensors: tensor 'quantised.weight' has dtype F8_E4M3"):
        average_checkpoints([low_precision, low_precision], tmp_path / "avg.safetensors")


def test_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    paths = write_inputs(tmp_path, 2)
    destination = tmp_path / "avg.safetensors"

    def fail(name):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        average_checkpoints(paths, destination, progress=fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-0.safetensors", "run-1.safetensors"]


@pytest.mark.parametrize("weights, words", [([1, -1], "non-negative"), ([0, 0], "all zero"), ([1], "1 weights")])
def test_bad_weights(tmp_path, weights, words):
    paths = write_inputs(tmp_path, 2)
    with pytest.raises(OfaError, match=words):
        average_checkpoints(paths, tmp_path / "avg.safetensors", weights)


def test_refuses_to_overwrite_an_input_and_truncated_files(tmp_path):
    paths = write_inputs(tmp_path, 2)
    with pytest.raises(OfaError, match="overwrite"):
        average_checkpoints(paths, paths[1])
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(paths[0].read_bytes()[:-100])
    with pytest.raises(OfaError, match="truncated|inconsistent"):
        average_checkpoints([paths[0], truncated], tmp_path / "avg.safetensors")


def test_file_sha256_is_chunked_and_correct(tmp_path):
    import hashlib

    path = write_inputs(tmp_path, 1)[0]
    assert file_sha256(path, chunk_bytes=4096) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_average_and_accumulate(tmp_path):
    paths = [str(p) for p in write_inputs(tmp_path, 3)]
    runner = CliRunner()
    result = runner.invoke(average, ["--weights", "2,1,1", str(tmp_path / "avg.safetensors"), *paths])
    assert result.exit_code == 0, result.output
    assert "3 tensors" not in result.output and "5 tensors" in result.output
    expected = numpy_mean(paths, "classifier.weight", [2, 1, 1])
    assert max_diff(load_file(tmp_path / "avg.safetensors")["classifier.weight"], expected) <= 1e-6
    result = runner.invoke(average, ["-q", "--fsync", "--accumulate", str(tmp_path / "prefixes"), *paths])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "prefixes").iterdir()) == [
        "prefix-01.safetensors", "prefix-02.safetensors", "prefix-03.safetensors"]


def test_cli_errors_are_ofa_errors(tmp_path):
    paths = [str(p) for p in write_inputs(tmp_path, 2)]
    result = CliRunner().invoke(average, ["-q", "--weights", "1,x", str(tmp_path / "avg.safetensors"), *paths])
    assert isinstance(result.exception, OfaError) and "--weights" in str(result.exception)
    result = CliRunner().invoke(average, ["-q", "--weights", "1", str(tmp_path / "avg.safetensors"), *paths])
    assert isinstance(result.exception, OfaError) and "1 weights for 2 inputs" in str(result.exception)


MEMORY_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ofa_eval.weights.averaging import average_checkpoints

    def status_bytes(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    folder = Path(sys.argv[1])
    inputs = sorted(folder.glob("run-*.safetensors"))
    before = status_bytes("VmRSS")
    average_checkpoints(inputs, folder / "avg.safetensors")
    # VmHWM: the peak RSS of this process image, mapped file pages included. ru_maxrss would be the
    # same but for the parent's (pytest's) RSS at fork, which Linux carries over into it across exec.
    peak = status_bytes("VmHWM")
    print(peak - before)
""")


def test_memory_stays_bounded(tmp_path):
    """Ten ~40 MB checkpoints: the averaging process grows by less than 3x one checkpoint."""
    from safetensors.numpy import save_file as save_numpy

    block = np.random.default_rng(0).standard_normal((1000, 1000), dtype=np.float32)
    for seed in range(10):
        state = {f"layer.{i}.weight": np.roll(block, 7 * seed + i) for i in range(10)}
        save_numpy(state, tmp_path / f"run-{seed}.safetensors")
    checkpoint_bytes = (tmp_path / "run-0.safetensors").stat().st_size
    assert checkpoint_bytes > 39e6
    completed = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                               check=True, cwd=Path(__file__).resolve().parents[1])
    growth = int(completed.stdout.strip().splitlines()[-1])
    assert growth < 3 * checkpoint_bytes, f"RSS grew by {growth / 1e6:.0f} MB"
    assert (tmp_path / "avg.safetensors").stat().st_size == checkpoint_bytes
