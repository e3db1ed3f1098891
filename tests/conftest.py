"""Shared fixtures: offline settings, the CLI runner, the paper's release when present, and the
synthetic data (synthetic_release.py, synthetic_runs.py)."""

import itertools
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from synthetic_release import write_release
from synthetic_runs import write_grid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RELEASE = SHARED / "ofa-xlt-release"


TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
SMALL_SPLITS = {"train": 40, "validation": 8, "test": 8}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Factory: a folder with a synthetic corpus (`data/`, split sizes as given) and a tiny random
    model with a tokenizer trained on it (`model/`), for tests that really train."""

    def build(name: str, sizes: dict | None = None) -> Path:
        import torch

        from producers import modeling, synthetic

        torch.set_num_threads(1)
        root = tmp_path_factory.mktemp(name)
        synthetic.write_corpus(root / "data", sizes=sizes or SMALL_SPLITS)
        modeling.build_tiny_model(root / "model", synthetic.corpus_texts(root / "data"), vocab_size=300,
                                  **TINY_MODEL)
        return root

    return build


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
def write_synthetic_release(tmp_path):
    """Factory: write a synthetic release (options of `write_release`) into a fresh folder.

    Returns (folder, truth), the truth being the plain-Python record that tests/references.py
    computes expected results from.
    """
    numbers = itertools.count()

    def write(**options):
        folder = tmp_path / f"synthetic-release-{next(numbers)}"
        folder.mkdir()
        return folder, write_release(folder, **options)

    return write


@pytest.fixture
def import_synthetic_release(cli, write_synthetic_release):
    """Factory: write a synthetic release (options of `write_release`) and import it into the `cli`
    store; returns the `cli` fixture with `.truth` and `.release` (the folder) set."""

    def write_and_import(**options):
        cli.release, cli.truth = write_synthetic_release(**options)
        result = cli("import", "ofa-xlt", cli.release)
        assert result.exit_code == 0, result.output
        return cli

    return write_and_import


@pytest.fixture
def synthetic_store(import_synthetic_release):
    """The `cli` fixture over a store holding the default synthetic release (see synthetic_release.py)."""
    return import_synthetic_release()


@pytest.fixture
def synthetic_runs_grid(tmp_path):
    """Run folders of a 3 x 2 x 2 NLI grid under tmp_path/runs (see synthetic_runs.py); returns
    (folder, {run name: (config, truth)})."""
    folder = tmp_path / "runs"
    return folder, write_grid(folder)


@pytest.fixture
def ingested(cli, tmp_path):
    """The 3 x 2 x 2 NLI grid of synthetic_runs.py ingested into the `cli` store; returns its truth."""
    grid = write_grid(tmp_path / "runs")
    result = cli("ingest", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    return grid
