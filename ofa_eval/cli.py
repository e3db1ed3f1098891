"""The `ofa-eval` command line: a click group whose subcommands live in ofa_eval.commands."""

import os
import sys

import click

from ofa_eval.errors import OfaError

DEFAULT_DB = "ofa-eval.duckdb"


class OfaGroup(click.Group):
    """Turns OfaError into a one-line message on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OfaError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=OfaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_path",
    envvar="OFA_EVAL_DB",
    default=DEFAULT_DB,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The DuckDB store to use (also read from the OFA_EVAL_DB environment variable).",
)
@click.version_option(package_name="ofa-eval")
@click.pass_context
def main(ctx, db_path):
    """ofa-eval: evaluate zero-shot cross-lingual transfer honestly.

    Import released results or ingest your own runs into a DuckDB store, then compare
    model selection on source-language validation (Max SRC-DEV) with accumulative
    weight averaging and the target-language oracle (Max TRG-DEV).

    \b
    Typical session:
      ofa-eval quickstart                      # tiny offline grid, end to end
      ofa-eval import ofa-xlt ../shared/ofa-xlt-release
      ofa-eval protocol --task nli --model xlm-roberta-large --all --replay --exclude-draw 1
      ofa-eval sql "SELECT task, model, count(*) FROM runs GROUP BY ALL"
    """
    ctx.ensure_object(dict)
    ctx.obj["db_path"] = os.fspath(db_path)


def _register_commands():
    from ofa_eval.commands import average, pipeline, results, store_commands
    from producers import commands as producer_commands

    for module in (store_commands, results, pipeline, average, producer_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()
