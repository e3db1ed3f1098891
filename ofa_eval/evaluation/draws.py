"""Draws: ordered lists of runs with distinct (learning rate, batch size) configurations.

The draw at r is a draw's first r runs. Draws are sampled afresh with a seed (as in the paper:
R distinct configurations in random order, one seed each) or replayed from those recorded in
the store (the release's own draws).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ofa_eval.common.errors import OfaError
from ofa_eval.evaluation.pool import DEFAULT_MAX_RUNS, IncompletePool, Pool, pool_max_runs


@dataclass(frozen=True)
class DrawSet:
    """Ordered run lists, one per draw, with labels; `description` goes into the settings."""

    labels: list[str]
    runs: list[list[int]]
    description: dict


@dataclass(frozen=True)
class DrawOptions:
    """How draws are made: replayed from the store, or sampled with a seed.

    `automatic` (what the commands do when no draw option is given) decides per pool: a pool
    whose weights the store does not hold (released results) but that has recorded draws
    replays them, since fresh draws would need averaged models nobody can make; any other
    pool gets `n_draws` fresh draws with `seed`.
    """

    replay: bool = False
    exclude: tuple[str, ...] = ()
    n_draws: int = 10
    seed: int = 0
    automatic: bool = False

    def describe(self) -> str:
        if self.automatic:
            return (f"recorded draws for pools without weights (released results), "
                    f"{self.n_draws} fresh draws with seed {self.seed} for the others")
        if self.replay:
            left_out = f", leaving out {', '.join(self.exclude)}" if self.exclude else ""
            return f"recorded draws{left_out}"
        return f"{self.n_draws} fresh draws with seed {self.seed}"

    def for_pool(self, con, pool: Pool) -> DrawOptions:
        """The options this pool's draws are made with: automatic ones resolved (see the class)."""
        if not self.automatic:
            return self
        recorded = con.execute("SELECT count(*) FROM draw_table WHERE task=? AND model=?",
                               [pool.task, pool.model]).fetchone()[0]
        return replace(self, automatic=False, replay=bool(recorded) and not pool.has_weights)

    def automatic_notes(self, con, pool: Pool) -> list[str]:
        """A note where automatic draws replay a pool's recorded draws."""
        if not (self.automatic and self.for_pool(con, pool).replay):
            return []
        return [f"{pool.name}: replayed its recorded draws (the store has no weights of its runs to average fresh "
                "draws; --draws N --seed S samples fresh ones anyway)"]

    def max_runs_for(self, con, pool: Pool, max_runs: int | None) -> int:
        """The largest r: as asked, else the pool's default (`pool_max_runs`), no longer than the
        shortest recorded draw where this pool's draws are replayed."""
        default = pool_max_runs(pool, max_runs)
        options = self.for_pool(con, pool)
        if max_runs is not None or not options.replay:
            return default
        shortest = shortest_recorded_draw(con, pool, options.exclude)
        return min(default, shortest) if shortest else default

    def draws_for(self, con, pool: Pool, max_runs: int, recipe: str | None = None) -> DrawSet:
        """The pool's draws; a replayed averaging recipe uses its own recorded order where it has one."""
        if self.automatic:
            return self.for_pool(con, pool).draws_for(con, pool, max_runs, recipe)
        if self.replay:
            return recorded_draws(con, pool, max_runs, self.exclude, recipe)
        if self.exclude:
            raise OfaError("--exclude-draw applies to recorded draws: add --replay")
        if self.n_draws < 1:
            raise OfaError("--draws must be at least 1")
        return sample_draws(pool, self.n_draws, max_runs, self.seed)


def sample_draws(pool: Pool, n_draws: int, max_runs: int, seed: int) -> DrawSet:
    """Fresh draws as in the paper: R distinct configurations in random order, one seed each."""
    pool.check_max_runs(max_runs)
    configurations = pool.configurations
    by_config: dict[tuple, list[int]] = {}
    for run_id, config in sorted(pool.config.items()):
        by_config.setdefault(config, []).append(run_id)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        order = rng.permutation(len(configurations))[:max_runs]
        draws.append([_pick(rng, by_config[configurations[i]]) for i in order])
    return DrawSet([str(i) for i in range(n_draws)], draws,
                   {"draws": "sampled", "n_draws": n_draws, "seed": seed})


def _pick(rng: np.random.Generator, run_ids: list[int]) -> int:
    return run_ids[int(rng.integers(len(run_ids)))]


def recorded_draws(con, pool: Pool, max_runs: int, exclude: tuple[str, ...], recipe: str | None) -> DrawSet:
    """The store's recorded draws; a recipe's own recorded order replaces the common one."""
    rows = con.execute(
        "SELECT draw, recipe, run_id FROM draw_table WHERE task=? AND model=? AND recipe IN ('*', ?) "
        "ORDER BY draw, recipe, position", [pool.task, pool.model, recipe or "*"]).fetchall()
    if not rows:
        raise IncompletePool(f"{pool.name}: no recorded draws in the store (sample with --draws N --seed S)")
    draws: dict[str, dict[str, list[int]]] = {}
    for label, draw_recipe, run_id in rows:
        draws.setdefault(label, {}).setdefault(draw_recipe, []).append(run_id)
    chosen = {label: orders.get(recipe, orders.get("*")) for label, orders in draws.items()}
    chosen = {label: runs for label, runs in chosen.items() if runs}
    unknown = [label for label in exclude if label not in chosen]
    if unknown:
        raise OfaError(f"{pool.name}: no recorded draw {unknown[0]!r} "
                       f"(recorded: {', '.join(sorted(chosen, key=_label_order))})")
    kept = {label: runs for label, runs in chosen.items() if label not in exclude}
    if not kept:
        raise OfaError(f"{pool.name}: every recorded draw is excluded")
    short = [label for label, runs in kept.items() if len(runs) < max_runs]
    if short:
        shortest = min(len(kept[label]) for label in short)
        raise OfaError(f"{pool.name}: --max-runs {max_runs} exceeds recorded draw {short[0]!r} "
                       f"({len(kept[short[0]])} runs); pass --max-runs {shortest} or less "
                       f"(the default for recorded draws is the shortest, at most {DEFAULT_MAX_RUNS})")
    labels = sorted(kept, key=_label_order)
    return DrawSet(labels, [kept[label][:max_runs] for label in labels],
                   {"draws": "recorded", "excluded": sorted(exclude)})


def shortest_recorded_draw(con, pool: Pool, exclude: tuple[str, ...]) -> int | None:
    """The fewest runs of any recorded draw order (any recipe) left after `exclude`; None if none."""
    return con.execute(
        "SELECT min(n) FROM (SELECT draw, count(*) AS n FROM draw_table WHERE task=? AND model=? "
        "GROUP BY draw, recipe) WHERE NOT list_contains(?, draw)",
        [pool.task, pool.model, list(exclude)]).fetchone()[0]


def _label_order(label: str):
    return (0, int(label), label) if label.isdigit() else (1, 0, label)


def possible_draws(seed_counts: list[int], max_runs: int) -> list[int]:
    """How many distinct draws of r runs exist, r = 1..R: e_r of the configurations' seed counts."""
    coefficients = [1] + [0] * max_runs
    for n in seed_counts:
        for r in range(max_runs, 0, -1):
            coefficients[r] += coefficients[r - 1] * n
    return coefficients[1:]
