"""The statistics path (protocol, sql, check, grid) never imports torch or transformers."""

import subprocess
import sys
import textwrap


PROBE = textwrap.dedent("""
    import sys
    from click.testing import CliRunner
    from ofa_eval.cli import main
    db, table = sys.argv[1], sys.argv[2]
    for args in (["protocol", "--replay", "-R", "3"], ["sql", "SELECT count(*) FROM scores"],
                 ["grid", "--task", "nli", "--model", "tiny-model"], ["check", table, "--replay"],
                 ["--help"], ["protocol", "--help"]):
        result = CliRunner().invoke(main, ["--db", db, *args])
        assert result.exit_code in (0, 1), (args, result.output)
    heavy = sorted(m for m in ("torch", "transformers", "scipy", "datasets") if m in sys.modules)
    print("heavy:", ",".join(heavy))
""")


def test_statistics_commands_do_not_import_torch(synthetic_store, tmp_path):
    cli = synthetic_store
    table = tmp_path / "table.csv"
    table.write_text("task,model,strategy,variant,runs,mean,std,draws\nnli,tiny-model,max-src-dev,ca,1,0,,\n")
    probe = subprocess.run([sys.executable, "-c", PROBE, str(cli.db), str(table)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "heavy:"
