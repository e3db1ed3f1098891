"""The options that several commands share, and the engine objects built from them.

A command declares options with these decorators and receives them as keyword arguments;
`*_keywords` turn those into the keywords of the notebook API (ofa_eval.api), which the
commands call, so a flag and its keyword mean the same; `pairs_from` and `draws_from` give the
engine's objects to the commands that make averaged models.
"""

from __future__ import annotations

import click

FORMATS = ["table", "csv", "json", "markdown", "latex"]


def _apply(options, function):
    for option in reversed(options):
        function = option(function)
    return function


def param_names(decorator) -> set[str]:
    """The keyword names of the options an option decorator adds."""
    return {param.name for param in getattr(decorator(lambda: None), "__click_params__", [])}


def selection_options(function):
    """Which pools and strategy/variant pairs."""
    return _apply([
        click.option("--task", "tasks", multiple=True, help="Task(s) to evaluate (default: every task in the store)."),
        click.option("--model", "models", multiple=True,
                     help="Model(s) to evaluate (default: every model in the store)."),
        click.option("--strategy", "strategies", multiple=True, metavar="NAME",
                     help="max-src-dev, max-trg-dev, accumulative, soup, greedy-soup or a registered strategy "
                          "(repeatable; default: the paper's four, as with --all)."),
        click.option("--variant", "variants", multiple=True, metavar="NAME",
                     help="last, src-dev, ca or trg-dev (repeatable; default: every variant the strategy takes)."),
        click.option("--all", "all_pairs", is_flag=True,
                     help="Every strategy/variant pair of the paper's Tables 1 and 2."),
    ], function)


def pool_options(function):
    """Which pools, for commands whose pairs are given otherwise."""
    return _apply([
        click.option("--task", "tasks", multiple=True, help="Task(s) (default: every task in the store)."),
        click.option("--model", "models", multiple=True, help="Model(s) (default: every model in the store)."),
    ], function)


def draw_options(function):
    """How draws are made, and how far r goes."""
    return _apply([
        click.option("--draws", "n_draws", type=int, default=None,
                     help="Number of fresh random draws (default 10; ignored with --replay). Without --draws, "
                          "--seed and --replay, a pool whose weights the store lacks (released results) replays "
                          "its recorded draws and every other pool gets 10 fresh draws with seed 0."),
        click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the fresh draws (default 0)."),
        click.option("--replay", is_flag=True, help="Use the draws recorded in the store instead of sampling."),
        click.option("--exclude-draw", "exclude", multiple=True,
                     help="Leave a recorded draw out (repeatable); the paper left out draw 1."),
        click.option("--max-runs", "-R", "max_runs", type=click.IntRange(min=1),
                     help="Largest number of runs r per draw (default: 10, or a pool's number of "
                          "learning-rate/batch-size configurations where that is smaller, or the "
                          "shortest recorded draw where draws are replayed)."),
        click.option("--soup-k", type=int, default=5, show_default=True,
                     help="Snapshots averaged by SOUP (at least 1)."),
    ], function)


def resampling_options(n_resamples: int, what: str, resample: bool = False, ci: float | None = 95.0,
                       ci_help: str = "Confidence level, percent."):
    """--bootstrap, --ci, --bootstrap-seed (and --resample): one `ResamplingOptions`."""
    options = [
        click.option("--bootstrap", "n_resamples", type=int, default=n_resamples, show_default=True,
                     help=f"Bootstrap resamples for {what}."),
        click.option("--ci", "ci_percent", type=float, default=ci, show_default=ci is not None, help=ci_help),
        click.option("--bootstrap-seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the resampling."),
    ]
    if resample:
        options.append(click.option(
            "--resample", type=click.Choice(["draws", "draws+examples"]), default="draws", show_default=True,
            help="What the intervals resample: whole draws, or draws and target test examples jointly "
                 "(needs ingested runs' per-example statistics)."))
    return lambda function: _apply(options, function)


def format_option(choices=tuple(FORMATS)):
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default="table", show_default=True)


def selection_keywords(params: dict) -> dict:
    """--task/--model/--strategy/--variant/--all as the notebook API's keywords (ofa_eval.api)."""
    keywords = {"task": params["tasks"], "model": params["models"]}
    if "strategies" in params:
        keywords.update(strategy=params["strategies"], variant=params["variants"], all_pairs=params["all_pairs"])
    return keywords


def draw_keywords(params: dict) -> dict:
    """--draws/--seed/--replay/--exclude-draw/--max-runs/--soup-k as the API's keywords."""
    return {"draws": params["n_draws"], "seed": params["seed"], "replay": params["replay"],
            "exclude_draws": params["exclude"], "max_runs": params["max_runs"], "soup_k": params["soup_k"]}


def resampling_keywords(params: dict) -> dict:
    """--ci/--bootstrap/--bootstrap-seed (and --resample) as the API's keywords."""
    keywords = {"ci": params["ci_percent"], "bootstrap": params["n_resamples"],
                "bootstrap_seed": params["bootstrap_seed"]}
    if "resample" in params:
        keywords["resample"] = params["resample"]
    return keywords


def pairs_from(params: dict) -> list[tuple[str, str]]:
    """The (strategy, variant) pairs that --strategy/--variant/--all ask for."""
    from ofa_eval.api import pairs_for

    return pairs_for(params["strategies"], params["variants"], params.get("all_pairs"), params["soup_k"])


def draws_from(params: dict):
    """The `DrawOptions` of --draws/--seed/--replay/--exclude-draw; automatic where none is given."""
    from ofa_eval.api import draw_options

    return draw_options(params["n_draws"], params["seed"], params["replay"], params["exclude"])
