"""The `ofa-eval` command line: a click group whose subcommands live in ofa_eval.commands."""

import os
import sys

import click

from ofa_eval.common.errors import OfaError
from ofa_eval.commands.extras import INSTALL_HINT, is_training_module

DEFAULT_DB = "ofa-eval.duckdb"


class OfaGroup(click.Group):
    """Turns OfaError, an operating-system error on a file (a folder that cannot be made, a full
    disk, a permission), and a missing module of the training extra into a one-line message on
    stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OfaError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as error:
            if not is_training_module(error):
                raise
            click.echo(f"error: ofa-eval {ctx.invoked_subcommand} needs the training extra: {INSTALL_HINT}", err=True)
            sys.exit(2)
        except OSError as error:
            if error.filename is None:
                raise
            click.echo(f"error: {error.filename}: {error.strerror or error}", err=True)
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
@click.option(
    "--task-module",
    "task_modules",
    multiple=True,
    envvar="OFA_EVAL_TASK_MODULES",
    type=click.Path(dir_okay=False),
    help="A Python file defining task classes to register (docs/tasks.md); repeatable. Also read "
    "from OFA_EVAL_TASK_MODULES (paths separated by ':').",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    envvar="OFA_EVAL_LOCK_TIMEOUT",
    default=None,
    help="Seconds to wait for a store that another process holds (default 60; also read from "
    "OFA_EVAL_LOCK_TIMEOUT). 0: fail at once.",
)
@click.version_option(package_name="ofa-eval")
@click.pass_context
def main(ctx, db_path, task_modules, lock_timeout):
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
    from ofa_eval.store.database import set_lock_timeout

    set_lock_timeout(lock_timeout)  # every call sets it: in-process callers (tests) invoke main repeatedly
    if task_modules:
        from ofa_eval.tasks.registry import load_task_modules

        load_task_modules(task_modules)


def _register_commands():
    from ofa_eval.commands import analyses, average, pipeline, results, store_commands, validate
    from producers import commands as producer_commands

    for module in (store_commands, results, analyses, pipeline, average, validate, producer_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()
