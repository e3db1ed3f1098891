"""Temporaries named after their owner process (`ofa_eval.common.tempfiles`), and `average` cleaning up after a killed run."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ofa_eval.weights.averaging import average_checkpoints
from ofa_eval.common.tempfiles import remove_orphans, temporary_owner, temporary_path

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_names_say_which_process_owns_them(tmp_path):
    temporary = temporary_path(tmp_path / "model.safetensors")
    assert temporary.parent == tmp_path and temporary.name.startswith(".model.safetensors.tmp-")
    host, pid = temporary_owner(temporary)
    assert pid == os.getpid() and host in temporary.name
    assert temporary_path(tmp_path / "model.safetensors") != temporary
    assert temporary_owner(tmp_path / ".x.tmp-node-12-345-0123abcd") == ("node-12", 345)
    for other in ("model.safetensors", ".x.tmp-1a2b3c4d", ".x.json.tmp", ".x.tmp-12345"):
        assert temporary_owner(tmp_path / other) is None


def test_only_orphans_of_this_host_are_removed(tmp_path):
    mine = temporary_path(tmp_path / "a.safetensors")
    host = temporary_owner(mine)[0]
    pid = dead_pid()
    orphan_file = tmp_path / f".b.safetensors.tmp-{host}-{pid}-0123abcd"
    orphan_folder = tmp_path / f".model.tmp-{host}-{pid}-89abcdef"
    elsewhere = tmp_path / f".c.safetensors.tmp-another-host-{pid}-0123abcd"
    unrelated = [tmp_path / "d.safetensors", tmp_path / ".e.json.tmp", tmp_path / f".f.tmp-{pid}"]
    for path in (mine, orphan_file, elsewhere, *unrelated):
        path.write_bytes(b"partial")
    orphan_folder.mkdir()
    (orphan_folder / "config.json").write_text("{}")
    assert sorted(remove_orphans(tmp_path)) == sorted([orphan_file, orphan_folder])
    assert sorted(tmp_path.iterdir()) == sorted([mine, elsewhere, *unrelated])
    assert remove_orphans(tmp_path / "missing") == []


# Keeps `ofa-eval average` from moving its output into place: however fast it runs, the kill
# lands while its temporary exists, with no race against the poll.
HOLD_BEFORE_RENAME = textwrap.dedent("""
    import os, time
    os.replace = lambda *args, **kwargs: time.sleep(600)
""")

LIVE_WRITER = textwrap.dedent("""
    import sys
    from ofa_eval.common.tempfiles import temporary_path
    temporary = temporary_path(sys.argv[1])
    temporary.write_bytes(b"still being written")
    print(temporary, flush=True)
    sys.stdin.read()
""")


def write_inputs(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        paths.append(folder / f"run-{seed}.safetensors")
        save_file({f"layer.{i}.weight": rng.standard_normal((512, 512), dtype=np.float32) for i in range(8)},
                  paths[-1])
    return paths


def wait_for_temporary(folder: Path, process: subprocess.Popen, size: int) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = [path for path in folder.glob(".avg.safetensors.tmp-*") if path.stat().st_size == size]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no complete temporary appeared (exit code {process.poll()})")


def test_a_killed_average_leaves_an_orphan_that_the_next_average_removes(tmp_path):
    inputs = write_inputs(tmp_path / "inputs", 3)
    out = tmp_path / "out"
    out.mkdir()
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_BEFORE_RENAME)
    killed = subprocess.Popen([Path(sys.executable).with_name("ofa-eval"), "average", "-q", out / "avg.safetensors",
                               *inputs], env={**os.environ, "PYTHONPATH": str(hook)}, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        orphan = wait_for_temporary(out, killed, inputs[0].stat().st_size)
    finally:
        killed.send_signal(signal.SIGKILL)
        _, errors = killed.communicate()
    assert killed.returncode == -signal.SIGKILL, errors
    assert temporary_owner(orphan)[1] == killed.pid and not (out / "avg.safetensors").exists()

    live = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, out / "other.safetensors"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        live_temporary = Path(live.stdout.readline().strip())
        report = average_checkpoints(inputs, out / "avg.safetensors")
        assert not orphan.exists()
        assert live_temporary.exists() and temporary_owner(live_temporary)[1] == live.pid
    finally:
        live.communicate("")
    assert sorted(out.iterdir()) == sorted([report.output, live_temporary])
    expected = np.mean([load_file(path)["layer.3.weight"] for path in inputs], axis=0, dtype=np.float32)
    np.testing.assert_array_equal(load_file(report.output)["layer.3.weight"], expected)
