"""Strategies: how a draw's first r runs become one scored model, in a registry.

Each strategy is one object that owns its variants, the averaged models it needs, how it picks
the model each (draw, r) cell is scored on, its label and its plot style. The engine,
`materialize`, `check` and `report` ask the registry and never branch on a strategy's name.

Built in:
- max-src-dev: among the first r runs, the run whose variant has the highest source-language
  validation score (the earlier run wins a tie); its target score.
- max-trg-dev: the same, ranked by the run's target-language validation criterion (oracle).
- accumulative: the averaged model of the first r runs' variant.
- soup: the average of the top-k snapshots (by source validation) of the first r runs.
- greedy-soup: Wortsman et al.'s (2022) greedy soup over the first r runs' variant models: in
  order of source validation, a run joins when the average with it scores at least as well on
  source validation as the soup without it (not in the paper: computed only when named).

A strategy of one's own is a subclass of `Strategy` passed to `register_strategy`, or an entry
point in the group `ofa_eval.strategies` (docs/protocol.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ofa_eval.common.errors import OfaError
from ofa_eval.common.keys import member_key
from ofa_eval.evaluation.draws import DrawSet
from ofa_eval.evaluation.pool import Pool

# What one (draw, r) cell is scored on: ('run', variant, run_id) or ('average', recipe, member key).
Model = tuple[str, str, object]
SELECTION_VARIANTS = ("last", "src-dev", "ca")


@dataclass
class MissingAverages(Exception):
    """Averaged models a strategy needs but the store has no scores for."""

    task: str
    model: str
    member_sets: list[tuple[str, list[str]]]  # (recipe, external ids in draw order)


@dataclass(frozen=True)
class PlotStyle:
    color: str = "tab:gray"
    marker: str = "o"


class Strategy:
    """One way of scoring a draw at r. Subclasses set the attributes and implement `cell_models`."""

    name: str = ""
    label: str = ""  # how tables and figures name it
    variants: tuple[str, ...] = ()
    in_paper: bool = False  # computed when no strategy is named (the paper's Tables 1 and 2)
    closed_form: bool = False  # --exact can compute it over every possible draw
    style: PlotStyle = PlotStyle()

    def __init__(self, **attributes):
        """Class attributes are the defaults; keyword arguments override them for this instance."""
        for key, value in attributes.items():
            if not hasattr(type(self), key):
                raise TypeError(f"{type(self).__name__} has no attribute {key!r}")
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"<strategy {self.name}: {', '.join(self.variants)}>"

    def variant_names(self, soup_k: int) -> tuple[str, ...]:
        """The variants this strategy takes, concrete for this call."""
        return self.variants

    def accepts_variant(self, variant: str) -> bool:
        """Whether a benchmark table may name this variant."""
        return variant in self.variants

    def recipe(self, variant: str) -> str | None:
        """The recipe of the averaged models this strategy scores (None: it scores runs)."""
        return None

    def cell_models(self, pool: Pool, draws: DrawSet, variant: str, max_runs: int) -> list[list[Model]]:
        """The model each cell of the (n_draws, max_runs) curve is scored on.

        Raises MissingAverages naming the averaged models whose scores the store lacks.
        """
        raise NotImplementedError

    def members_needed(self, pool: Pool, variant: str, runs: list[int]) -> tuple[int, ...] | None:
        """The runs of the averaged model a cell of these runs needs (None: none is missing)."""
        return tuple(runs) if self.recipe(variant) else None


class SelectionStrategy(Strategy):
    """Score the run whose variant is best on the variant's selection criterion."""

    closed_form = True

    def cell_models(self, pool, draws, variant, max_runs):
        return [[("run", variant, int(run_id)) for run_id in row]
                for row in selected_runs(pool, draws, variant, max_runs)]


class AveragingStrategy(Strategy):
    """Score the averaged model of the first r runs' variant weights."""

    def recipe(self, variant):
        return variant

    def cell_models(self, pool, draws, variant, max_runs):
        recipe = self.recipe(variant)
        return [[("average", recipe, key) for key in keys] for keys in averaged_model_keys(pool, draws, recipe, max_runs)]


class SoupStrategy(AveragingStrategy):
    """Average the k snapshots with the best source validation among the first r runs' snapshots."""

    def variant_names(self, soup_k):
        return (f"top{soup_k}",)

    def accepts_variant(self, variant):
        return re.fullmatch(r"top\d+", variant) is not None

    def recipe(self, variant):
        return f"soup-{variant}"


class GreedySoupStrategy(Strategy):
    """Greedy soups share the variant's recipe with accumulative averages, so a member set is
    made and scored once for both."""

    def recipe(self, variant):
        return variant

    def cell_models(self, pool, draws, variant, max_runs):
        models, missing = [], []
        for runs in draws.runs:
            row = []
            for r in range(1, max_runs + 1):
                path = greedy_soup(pool, variant, runs[:r])
                if path.needs is not None:
                    missing.append((variant, [pool.external_id[run_id] for run_id in path.needs]))
                elif len(path.members) == 1:
                    row.append(("run", variant, path.members[0]))  # a one-model soup is that run's model
                else:
                    row.append(("average", variant, member_key(pool.member_identities(variant, path.members))))
            models.append(row)
        if missing:
            raise MissingAverages(pool.task, pool.model, missing)
        return models

    def members_needed(self, pool, variant, runs):
        needs = greedy_soup(pool, variant, list(runs)).needs
        return None if needs is None else tuple(needs)


STRATEGIES: dict[str, Strategy] = {}
_PLUGINS_LOADED = False


def register_strategy(strategy: Strategy, replace: bool = False) -> Strategy:
    """Make a strategy known to every command (protocol, materialize, check, report, ...)."""
    if not strategy.name or not strategy.variants:
        raise OfaError(f"a strategy needs a name and variants: {strategy!r}")
    if strategy.name in STRATEGIES and not replace and STRATEGIES[strategy.name] is not strategy:
        raise OfaError(f"strategy {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy
    return strategy


def unregister_strategy(name: str) -> None:
    STRATEGIES.pop(name, None)


def _load_plugins() -> None:
    """Register the strategies that installed packages declare (entry point group ofa_eval.strategies)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib import metadata  # costs ~0.1 s: only when a name is not built in, or for a listing

    for entry in metadata.entry_points(group="ofa_eval.strategies"):
        try:
            found = entry.load()
        except Exception as error:  # a broken plug-in must not break the built-in strategies
            raise OfaError(f"strategy plug-in {entry.value}: cannot be loaded ({error})") from None
        register_strategy(found() if isinstance(found, type) else found, replace=True)


def registered() -> dict[str, Strategy]:
    _load_plugins()
    return STRATEGIES


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        _load_plugins()
    if name not in STRATEGIES:
        raise OfaError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


for _builtin in (
        SelectionStrategy(name="max-src-dev", label="Max SRC-DEV", variants=SELECTION_VARIANTS, in_paper=True,
                          style=PlotStyle("tab:blue", "o")),
        SelectionStrategy(name="max-trg-dev", label="Max TRG-DEV", variants=("trg-dev",), in_paper=True,
                          style=PlotStyle("tab:green", "^")),
        AveragingStrategy(name="accumulative", label="Accumulative", variants=SELECTION_VARIANTS, in_paper=True,
                          style=PlotStyle("tab:red", "s")),
        SoupStrategy(name="soup", label="Soup", variants=("top{k}",), in_paper=True, style=PlotStyle("tab:purple", "D")),
        GreedySoupStrategy(name="greedy-soup", label="Greedy soup", variants=SELECTION_VARIANTS,
                           style=PlotStyle("tab:orange", "v"))):
    register_strategy(_builtin)


def curve_models(pool: Pool, draws: DrawSet, strategy: str, variant: str, max_runs: int) -> list[list[Model]]:
    """The model each cell of a pair's (n_draws, max_runs) curve is scored on.

    Raises MissingAverages listing the averaged models (member sets) whose scores the store
    lacks; for greedy soups those are the next candidates each greedy path needs.
    """
    return get_strategy(strategy).cell_models(pool, draws, variant, max_runs)


def strategy_pairs(strategies, variants, soup_k: int) -> list[tuple[str, str]]:
    """The (strategy, variant) pairs to compute; the paper's pairs when no strategy is named."""
    if soup_k < 1:
        raise OfaError(f"--soup-k must be at least 1 (the snapshots a soup averages), not {soup_k}")
    names = list(strategies) or [name for name, strategy in STRATEGIES.items() if strategy.in_paper]
    chosen = [get_strategy(name) for name in names]
    offered = {v for strategy in chosen for v in strategy.variant_names(soup_k)}
    every_variant = {v for strategy in STRATEGIES.values() for v in strategy.variant_names(soup_k)}
    wanted = [f"top{soup_k}" if v == "top{k}" else v for v in variants]
    for variant in wanted:
        if variant not in every_variant:
            raise OfaError(f"unknown variant {variant!r} (known: {', '.join(sorted(every_variant))})")
    pairs = [(strategy.name, variant) for strategy in chosen for variant in strategy.variant_names(soup_k)
             if not wanted or variant in wanted]
    if not pairs:
        raise OfaError(f"no strategy among {', '.join(names)} takes variant(s) {', '.join(wanted)}")
    unused = [v for v in wanted if v not in offered]
    if unused:
        raise OfaError(f"variant {unused[0]!r} does not apply to strategy {', '.join(names)}")
    return pairs


def selected_runs(pool: Pool, draws: DrawSet, variant: str, max_runs: int) -> np.ndarray:
    """Run ids of shape (n_draws, max_runs): the run selected among each draw's first r runs."""
    criterion, target = pool.criteria.get(variant, {}), pool.target_test.get(variant, {})
    out = np.empty((len(draws.runs), max_runs), dtype=np.int64)
    for d, runs in enumerate(draws.runs):
        missing = [pool.external_id[r] for r in runs if r not in criterion or r not in target]
        if missing:
            raise OfaError(f"{pool.name}: run {missing[0]} has no {variant!r} "
                           "selection criterion or target test score in the store")
        best = runs[0]
        for r, run_id in enumerate(runs[:max_runs]):
            if criterion[run_id] > criterion[best]:
                best = run_id
            out[d, r] = best
    return out


def averaged_model_keys(pool: Pool, draws: DrawSet, recipe: str, max_runs: int) -> list[list[str | None]]:
    """The member key of each draw's averaged model at r = 1..R (None where weights are missing)."""
    keys = []
    for runs in draws.runs:
        identities = [pool.member_identities(recipe, runs[:r]) for r in range(1, max_runs + 1)]
        keys.append([None if i is None else member_key(i) for i in identities])
    return keys


@dataclass(frozen=True)
class GreedyPath:
    """A greedy soup walked as far as the store allows: its members so far, and the candidate
    member set whose source validation score is needed next (None when the soup is complete)."""

    members: list[int]
    needs: list[int] | None


def greedy_soup(pool: Pool, variant: str, run_ids: list[int]) -> GreedyPath:
    """Wortsman et al.'s greedy soup of the runs' `variant` models, ranked by source validation.

    The best run starts the soup; each next run (in decreasing source validation, the earlier
    run first on a tie) joins when the average with it scores at least the soup's current
    source validation score.
    """
    criterion = pool.criteria.get(variant, {})
    missing = [pool.external_id[r] for r in run_ids if r not in criterion]
    if missing:
        raise OfaError(f"{pool.name}: run {missing[0]} has no {variant!r} source validation score")
    ranked = sorted(run_ids, key=lambda run_id: -criterion[run_id])
    soup, best = [ranked[0]], criterion[ranked[0]]
    for run_id in ranked[1:]:
        candidate = soup + [run_id]
        identities = pool.member_identities(variant, candidate)
        score = None if identities is None else pool.average_source_dev.get((variant, member_key(identities)))
        if score is None:
            return GreedyPath(soup, candidate)
        if score >= best:
            soup, best = candidate, score
    return GreedyPath(soup, None)
