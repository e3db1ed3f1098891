"""The SLURM cluster the SLURM tests submit to: the single-node one of `.ci/slurm-up.sh`, or any
cluster `SLURM_CONF` (or the default configuration) points at.

Without `sbatch` or a cluster that answers, the tests skip with the reason; under `CI=true` they
fail instead, so that CI cannot pass without running them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP_SCRIPT = ".ci/slurm-up.sh"


def default_conf() -> Path:
    """Where `.ci/slurm-up.sh` writes its slurm.conf."""
    folder = os.environ.get("OFA_SLURM_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "ofa-eval-slurm"
    return Path(folder) / "slurm.conf"


def find_cluster() -> tuple[dict | None, str]:
    """(environment for SLURM commands, "") or (None, why there is no cluster to test with)."""
    if shutil.which("sbatch") is None:
        return None, f"sbatch is absent: install slurm-wlm and start a cluster with {UP_SCRIPT}"
    env = dict(os.environ)
    if "SLURM_CONF" not in env and default_conf().is_file():
        env["SLURM_CONF"] = str(default_conf())
    try:
        answer = subprocess.run(["sinfo", "--noheader", "--format=%a"], capture_output=True, text=True, env=env,
                                timeout=30)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 30 s"
    if answer.returncode != 0 or "up" not in answer.stdout:
        why = answer.stderr.strip() or "no partition is up"
        return None, f"no SLURM cluster answers ({why}); start one with {UP_SCRIPT}"
    return env, ""


@pytest.fixture(scope="session")
def slurm_cluster():
    """The environment (SLURM_CONF included) under which SLURM commands reach the cluster; it is
    also set in os.environ for the session, so that submitit's sbatch calls find the cluster."""
    env, why = find_cluster()
    if env is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but the SLURM tests cannot run: {why}")
        pytest.skip(why)
    before = os.environ.get("SLURM_CONF")
    if "SLURM_CONF" in env:
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    yield env
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
