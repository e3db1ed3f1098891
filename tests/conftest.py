"""Shared fixtures: offline settings, the CLI runner, and the paper's release when present."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RELEASE = SHARED / "ofa-xlt-release"


@pytest.fixture
def cli(tmp_path):
    """Run `ofa-eval --db <tmp store> ARGS...` in-process; returns the click Result."""
    from ofa_eval.cli import main

    db = tmp_path / "store.duckdb"

    def invoke(*args, db_path=db):
        return CliRunner().invoke(main, ["--db", str(db_path), *map(str, args)], catch_exceptions=False)

    invoke.db = db
    return invoke


@pytest.fixture(scope="session")
def release_store(tmp_path_factory):
    """A store with the paper's released results imported (skips where ../shared is absent)."""
    if not RELEASE.is_dir():
        pytest.skip(f"the paper's release is not at {RELEASE} (it lives in ../shared beside the repository)")
    from ofa_eval.cli import main

    db = tmp_path_factory.mktemp("release") / "release.duckdb"
    result = CliRunner().invoke(main, ["--db", str(db), "import", "ofa-xlt", str(RELEASE)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def synthetic_store(tmp_path, cli):
    """The `cli` fixture over a store holding a small synthetic release (see synthetic_release.py)."""
    from synthetic_release import write_release

    release = tmp_path / "synthetic-release"
    release.mkdir()
    cli.truth = write_release(release)
    cli.release = release
    result = cli("import", "ofa-xlt", release)
    assert result.exit_code == 0, result.output
    return cli
