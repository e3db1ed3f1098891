"""`ofa-eval validate`: check run folders against the artifact format without touching the store."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("runs", type=click.Path(file_okay=False))
@click.pass_context
def validate(ctx, runs):
    """Check every run folder under RUNS (or RUNS itself) against the run format and list every problem.

    Every rule `ingest` enforces is checked (docs/artifacts.md): manifest fields, snapshot
    steps, gold and prediction tables, paths and symbolic links, safetensors headers, and
    runs present in two folders. Each problem is one line `<file>: <problem>`; folders that
    look like run folders but lack a manifest are warnings. Exits 1 when there is a problem,
    0 when every folder is fine. Nothing is written and the store is not opened.
    """
    from pathlib import Path

    from ofa_eval.artifacts.validation import validate_runs

    run_dirs, problems, warnings = validate_runs(Path(runs))
    for problem in problems:
        click.echo(problem.line())
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"{len(run_dirs)} run folder(s) checked, {len(problems)} problem(s)")
    if problems:
        ctx.exit(1)


COMMANDS = [validate]
