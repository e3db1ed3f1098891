"""Without the `train` extra (pyproject.toml) the statistics still work, and a command that
needs the extra says how to install it in one line.

The CLI runs in a fresh interpreter whose import system refuses every module of the extra, as
an install without the extra would (the modules are installed here, so a meta path finder
stands in for their absence).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRA = ("torch", "transformers", "tokenizers", "datasets", "submitit", "accelerate", "safetensors")

WITHOUT_EXTRA = f"""
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRA!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from ofa_eval.cli import main
    main(prog_name="ofa-eval")
"""


def ofa_eval_without_extra(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(WITHOUT_EXTRA), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_train_without_the_extra_prints_the_install_line():
    result = ofa_eval_without_extra("train", REPO / "producers" / "grids" / "quickstart.toml")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "error: ofa-eval train needs the training extra: pip install 'ofa-eval[train]'\n"


def test_help_lists_the_training_commands_without_the_extra():
    result = ofa_eval_without_extra("--help")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:")[1].split()
    assert {"train", "quickstart", "materialize", "protocol"} <= set(commands)
    result = ofa_eval_without_extra("train", "--help")
    assert result.returncode == 0 and "--task [ner|nli|qa]" in result.stdout, result.stderr


def test_protocol_on_a_store_works_without_the_extra(import_synthetic_release):
    cli = import_synthetic_release()
    arguments = ("protocol", "--model", "tiny-model", "--replay", "--max-runs", "4", "--format", "csv")
    expected = cli(*arguments)
    assert expected.exit_code == 0, expected.output
    result = ofa_eval_without_extra("--db", cli.db, *arguments)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout and result.stdout.count("\n") > 10
