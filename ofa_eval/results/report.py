"""`ofa-eval report`: a Markdown and HTML report with the paper-style tables and figures.

For every (task, model): what was evaluated (source language and target languages with their
evaluation-set sizes, configurations, seeds, draws), the protocol table (mean ± std over draws),
a figure of score against r with bootstrap confidence bands for every strategy, the
per-language gain of accumulative CA averaging over Max SRC-DEV (SRC-DEV variant) at r = R, and
the runs' source-language validation score against their mean target test score with its
correlation. Figures are PNG and SVG (the SVG keeps its text as text).
"""

from __future__ import annotations

import functools
import html
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa_eval.statistics import bootstrap
from ofa_eval.results.analysis import GAIN_PAIRS, pool_language_gains
from ofa_eval.statistics.correlation import pearson, spearman
from ofa_eval.statistics.draw_diversity import repeated_draw_intervals
from ofa_eval.results.formatting import render_protocol
from ofa_eval.evaluation import (DrawOptions, IncompletePool, Pool, ResamplingOptions, Skipped, available_curves,
                               get_strategy, load_pool, protocol_rows)
from ofa_eval.evaluation.curves import listed, skip_notes

LINE_STYLES = {"last": ":", "src-dev": "--", "ca": "-", "trg-dev": "-", "top": "-."}
FILL_STYLES = {"last": "none", "src-dev": "left"}  # hollow LAST and half-filled SRC-DEV markers; others full
STEP, SPREAD = 0.05, 0.3  # curves sit side by side, STEP apart and within r ± SPREAD / 2, so equal values show
FONTS = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10,
         "legend.fontsize": 9, "svg.fonttype": "none"}


@dataclass(frozen=True)
class EvalSetInfo:
    name: str  # dataset/language
    n_examples: int | None

    @property
    def size(self) -> str:
        return "size not recorded" if self.n_examples is None else f"{self.n_examples} examples"

    def sized(self) -> str:
        return f"{self.name} ({self.size})"


@dataclass(frozen=True)
class PoolFacts:
    """What a reader needs to know about a pool before its numbers."""

    metric: str
    sources: list[EvalSetInfo]  # source-language validation sets
    targets: list[EvalSetInfo]  # target-language test sets
    seeds: dict[tuple[float, int], list[int]]  # (learning rate, batch size) -> seeds

    @property
    def source(self) -> str:
        return ", ".join(s.name for s in self.sources) or "not in the store"

    @property
    def source_validation(self) -> str:
        """How text and figures name what selection ranks runs by."""
        return f"source-language validation ({self.source})"


_EVAL_SETS_SQL = """
SELECT DISTINCT e.role, e.dataset || '/' || e.language AS name, e.n_examples
FROM score_table sc JOIN run_table r USING (run_id) JOIN eval_set_table e USING (eval_set_id)
WHERE r.task = ? AND r.model = ?
  AND ((e.role = 'source' AND e.split = 'validation') OR (e.role = 'target' AND e.split = 'test'))
ORDER BY name
"""


def pool_facts(con, pool: Pool) -> PoolFacts:
    args = [pool.task, pool.model]
    sets = con.execute(_EVAL_SETS_SQL, args).fetchall()
    seeds: dict[tuple[float, int], list[int]] = {}
    runs = "SELECT learning_rate, batch_size, seed FROM run_table WHERE task = ? AND model = ? ORDER BY ALL"
    for lr, bs, seed in con.execute(runs, args).fetchall():
        seeds.setdefault((lr, bs), []).append(seed)
    (metric,) = con.execute("SELECT metric FROM task_table WHERE task = ?", [pool.task]).fetchone() or ("?",)
    return PoolFacts(metric, [EvalSetInfo(n, size) for role, n, size in sets if role == "source"],
                     [EvalSetInfo(n, size) for role, n, size in sets if role == "target"], seeds)


def describe_configurations(configurations: list[tuple[float, int]]) -> str:
    """Learning rates as written (1e-05) and batch sizes: as a grid where the pool is one."""
    rates = sorted({lr for lr, _ in configurations})
    sizes = sorted({bs for _, bs in configurations})
    if len(configurations) == len(rates) * len(sizes):
        return (f"learning rates {', '.join(str(float(lr)) for lr in rates)} × "
                f"batch sizes {', '.join(map(str, sizes))}")
    return "(learning rate, batch size) " + ", ".join(f"({float(lr)}, {bs})" for lr, bs in configurations)


def describe_seeds(seeds: dict[tuple[float, int], list[int]], shown: int = 12) -> str:
    counts = sorted({len(s) for s in seeds.values()})
    per = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    distinct = sorted({seed for s in seeds.values() for seed in s})
    listed = ", ".join(map(str, distinct[:shown])) + (", ..." if len(distinct) > shown else "")
    shared = "the same in every configuration" if len({tuple(s) for s in seeds.values()}) == 1 else \
        f"{len(distinct)} distinct"
    return f"{per} per configuration (seeds {listed}; {shared})"


def describe_pool(pool: Pool, facts: PoolFacts, options: DrawOptions, n_draws: int, max_runs: int) -> list[str]:
    """The "What this is" block: everything the numbers below depend on."""
    sources = ", ".join(s.size if len(facts.sources) == 1 else s.sized() for s in facts.sources) or "none"
    targets = ", ".join(t.sized() for t in facts.targets) or "none in the store"
    if facts.targets and all(t.n_examples is None for t in facts.targets):  # released results: say it once
        targets = f"{', '.join(t.name for t in facts.targets)} (sizes not recorded)"
    configurations = pool.configurations
    return ["### What this is", "",
            f"- Task {pool.task} (metric: {facts.metric}), model {pool.model}.",
            f"- Source language: {facts.source}. Max SRC-DEV, SRC-DEV snapshots and soups select on its "
            f"validation set ({sources}).",
            f"- Target languages (test sets): {targets}. A score is the unweighted mean over these "
            f"{len(facts.targets)} sets, in percent.",
            f"- Runs: {len(pool.external_id)} in {len(configurations)} configurations, "
            f"{describe_configurations(configurations)}.",
            f"- Seeds: {describe_seeds(facts.seeds)}.",
            f"- Draws: {n_draws} ({options.describe()}), each of r = 1..{max_runs} runs with distinct "
            "configurations.", ""]


def _new_axes(figsize: tuple[float, float]):
    """A figure and its axes, made without pyplot: nothing is registered with (or shown by) a
    notebook's backend, and the caller owns the figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _styled(plot):
    """Draw and save the figure with the report's readable font sizes and text-preserving SVG."""

    @functools.wraps(plot)
    def styled(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(FONTS):
            return plot(*args, **kwargs)

    return styled


def mean_bands(draws_runs: list[list[int]], scores: np.ndarray, rng, resampling: ResamplingOptions):
    """Mean over draws per r, with a percentile bootstrap band over draws (`rng` is shared by
    every curve of a report, so that each curve gets its own resamples). As in `protocol --ci`,
    an r where draws repeat resamples the distinct draws, and one distinct draw has no band."""
    boot = scores[bootstrap.paired_indices(scores.shape[0], resampling.n_resamples, rng)].mean(axis=1)
    low, high = bootstrap.percentile_interval(boot.T, resampling.level)
    for r, interval in repeated_draw_intervals(draws_runs, scores, resampling.level, resampling.n_resamples,
                                               lambda: rng).items():
        low[r], high[r] = interval
    return scores.mean(axis=0), low, high


def _variant_key(variant: str) -> str:
    return "top" if variant.startswith("top") else variant


def side_offsets(n_curves: int) -> np.ndarray:
    """Sideways shifts of n curves around each r: STEP apart, or closer to stay within ± SPREAD / 2."""
    width = min(SPREAD, STEP * (n_curves - 1))
    return np.linspace(-width / 2, width / 2, n_curves)


def _integer_r_axis(ax, max_runs: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, max_runs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


@_styled
def plot_curves(curves: dict, title: str, rng, resampling: ResamplingOptions):
    fig, ax = _new_axes((8, 5.2))
    for offset, ((strategy, variant), (draws, scores)) in zip(side_offsets(len(curves)), curves.items()):
        mean, low, high = mean_bands(draws.runs, scores, rng, resampling)
        r = np.arange(1, len(mean) + 1) + offset
        strategy_info = get_strategy(strategy)
        color, key = strategy_info.style.color, _variant_key(variant)
        ax.plot(r, mean, linestyle=LINE_STYLES.get(key, "-"), color=color, marker=strategy_info.style.marker,
                fillstyle=FILL_STYLES.get(key, "full"), markersize=7, linewidth=1.8, alpha=0.9,
                label=f"{strategy_info.label} {variant}")
        ax.fill_between(r, low, high, color=color, alpha=0.07, linewidth=0)
    _integer_r_axis(ax, scores.shape[1])
    ax.set_xlabel("runs r")
    ax.set_ylabel("mean target-language test score (%)")
    ax.set_title(f"{title}: score against r ({int(resampling.level * 100)}% bootstrap bands over draws)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(4, len(curves)), frameon=False)
    return fig


@_styled
def plot_language_gain(languages: list[str], gain: np.ndarray, low: np.ndarray, high: np.ndarray, title: str,
                       r: int, level: float):
    """One bar per language, sorted by gain, with its bootstrap interval as an error bar."""
    order = np.argsort(gain)
    fig, ax = _new_axes((7.5, max(3.0, 0.3 * len(languages) + 1.6)))
    errors = np.array([gain - low, high - gain])[:, order]
    ax.barh(np.array(languages)[order], gain[order], color=np.where(gain[order] >= 0, "tab:red", "tab:blue"),
            xerr=np.nan_to_num(errors), error_kw={"ecolor": "black", "elinewidth": 1, "capsize": 2})
    for y, i in enumerate(order):  # the value beyond the end of its error bar
        right = gain[i] >= 0
        end = np.nan_to_num(high[i] if right else low[i], nan=gain[i])
        ax.annotate(f"{gain[i]:+.2f}", (end, y), xytext=(4 if right else -4, 0), textcoords="offset points",
                    ha="left" if right else "right", va="center", fontsize=9)
    ax.margins(x=0.18, y=0.5 / max(len(languages), 1))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"accumulative CA minus Max SRC-DEV (S-DEV), r = {r} (points; bars: {int(level * 100)}% intervals)")
    ax.set_title(f"{title}: per-language gain of averaging")
    return fig


def coincident_points(x: np.ndarray, y: np.ndarray) -> Counter:
    """How many points fall on each place (to a millionth of a point)."""
    return Counter(zip(np.round(x, 6).tolist(), np.round(y, 6).tolist()))


@_styled
def plot_source_vs_target(source: np.ndarray, target: np.ndarray, title: str,
                          source_name: str = "source-language validation"):
    places = coincident_points(source, target)
    (xs, ys), counts = np.array(list(places)).T, np.array(list(places.values()))
    fig, ax = _new_axes((6, 5.2))
    single, tied = counts == 1, counts > 1
    ax.scatter(xs[single], ys[single], s=30, color="tab:blue", alpha=0.7, edgecolors="black", linewidths=0.6,
               label="one run")
    if tied.any():
        ax.scatter(xs[tied], ys[tied], s=30 * counts[tied], color="tab:orange", alpha=0.7, edgecolors="black",
                   linewidths=0.6, label="×n: n runs at the same place")
        for x, y, count in zip(xs[tied], ys[tied], counts[tied]):
            ax.annotate(f"×{count}", (x, y), xytext=(7, -4), textcoords="offset points", fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.margins(0.1)
    ax.set_xlabel(f"{source_name} score (%)")
    ax.set_ylabel("mean target-language test score (%)")
    ax.set_title(f"{title}: SRC-DEV snapshots of {len(source)} runs\n"
                 f"Pearson {_coefficient(pearson(source, target))}, Spearman {_coefficient(spearman(source, target))}")
    ax.grid(alpha=0.3)
    return fig


def _coefficient(value) -> str:
    return "undefined (constant scores)" if math.isnan(float(value)) else f"{float(value):.2f}"


@_styled
def save_figure(fig, out: Path) -> list[Path]:
    """`out`.png and `out`.svg (the SVG keeps its text as text)."""
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
    return paths


def coinciding_curves(curves: dict) -> list[list[tuple[str, str]]]:
    """Groups of pairs whose mean curves are equal at every r (drawn side by side)."""
    groups: dict[tuple, list] = {}
    for pair, (_, scores) in curves.items():
        groups.setdefault(tuple(np.round(scores.mean(axis=0), 6)), []).append(pair)
    return [pairs for pairs in groups.values() if len(pairs) > 1]


def curves_part(curves: dict, figure: str) -> list[str]:
    notes = [listed([f"{s} {v}" for s, v in pairs]) + " have the same mean at every r."
             for pairs in coinciding_curves(curves)]
    shift = float(side_offsets(len(curves)).max())
    return [f"![score against r]({figure}.png)", "",
            "Colour and marker: strategy; line style: variant (dotted LAST with hollow markers, dashed "
            f"SRC-DEV with half-filled ones, solid CA). At each r the curves sit side by side (shifted by at "
            f"most ±{shift:.3g}) so that equal values stay visible.", "", *notes, *([""] if notes else [])]


def gain_part(con, pool: Pool, curves: dict, max_runs: int, figure_name: str, title: str,
              resampling: ResamplingOptions) -> tuple[list[str], object]:
    """The per-language gain of accumulative CA over Max SRC-DEV (S-DEV) at r = R: a table and a figure."""
    a, b = GAIN_PAIRS
    gains = pool_language_gains(con, pool, (curves[a][0], a), (curves[b][0], b), max_runs, resampling)
    names = [f"{d}/{lang}" for d, lang in zip(gains["dataset"], gains["language"])]
    gain, low, high = (gains[c].to_numpy().astype(float) for c in ("gain", "ci_low", "ci_high"))
    figure = plot_language_gain(names, gain, low, high, title, max_runs, resampling.level)
    resampled = "draws and test examples" if gains["resampled"][0] == "draws+examples" else "draws"
    return [f"Accumulative CA averaging beats Max SRC-DEV (S-DEV) at r = {max_runs} in "
            f"{int((gain > 0).sum())} of {len(gain)} target languages (mean gain {np.mean(gain):+.2f} points); "
            f"the {int(resampling.level * 100)}% interval lies above 0 in {int((low > 0).sum())} and below 0 in "
            f"{int((high < 0).sum())} (paired bootstrap over {resampled}).", "",
            *gain_table(gains, names), "", f"![per-language gain]({figure_name}.png)", ""], figure


def gain_table(gains, names: list[str]) -> list[str]:
    """Markdown rows: language, test-set size, gain with interval, P(A > B), distinct draws."""
    lines = ["| language | test examples | gain [interval] | P(A > B) | distinct draws |", "|---|---|---|---|---|"]
    for name, row in zip(names, gains.iter_rows(named=True)):
        size = "not recorded" if row["n_examples"] is None else str(row["n_examples"])
        interval = "" if row["ci_low"] is None else f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
        lines.append(f"| {name} | {size} | {row['gain']:+.2f}{interval} | {row['p_better']:.2f} | "
                     f"{row['distinct_draws']} |")
    return lines


def _counted(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def ties_note(places: Counter) -> list[str]:
    shared = [count for count in places.values() if count > 1]
    if not shared:
        return []
    return [f"{sum(shared)} of {_counted(sum(places.values()), 'point')} share a place with another "
            f"({_counted(len(shared), 'place')}, up to {max(shared)} points at the same place): those are "
            "drawn larger, in orange, and labelled ×n with their number.", ""]


def scatter_part(pool: Pool, facts: PoolFacts, figure_name: str, title: str) -> tuple[list[str], object] | None:
    runs = sorted(set(pool.criteria.get("src-dev", {})) & set(pool.target_test.get("src-dev", {})))
    if len(runs) <= 2:
        return None
    source = np.array([pool.criteria["src-dev"][r] for r in runs])
    target = np.array([pool.target_test["src-dev"][r] for r in runs])
    figure = plot_source_vs_target(source, target, title, facts.source_validation)
    return [f"Across {len(runs)} runs, the Spearman correlation of {facts.source_validation} and mean target "
            f"test score of SRC-DEV snapshots is {_coefficient(spearman(source, target))}.", "",
            f"![source vs target]({figure_name}.png)", "", *ties_note(coincident_points(source, target))], figure


def pool_section(con, pool: Pool, pairs, options: DrawOptions, max_runs: int, rng, resampling: ResamplingOptions,
                 skip_missing: bool = False) -> tuple[str, dict, list[Skipped]]:
    """Markdown for one pool, the matplotlib figures it refers to ({file stem: Figure}; the text links
    `<stem>.png`), and what it left out (pairs whose averaged models are missing, with
    `skip_missing`; otherwise they are an error)."""
    max_runs = options.max_runs_for(con, pool, max_runs)
    options = options.for_pool(con, pool)
    common, curves, skipped = available_curves(con, pool, pairs, options, max_runs)
    if skipped and not (skip_missing and curves):
        raise IncompletePool(skipped[0].error, skip_notes(skipped)[0].removeprefix("skipped "))
    facts = pool_facts(con, pool)
    title = f"{pool.task} / {pool.model}"
    stem = f"{pool.task}-{pool.model}"
    figures = {f"{stem}-curves": plot_curves(curves, title, rng, resampling)}
    text = [f"## {title}", "", *describe_pool(pool, facts, options, len(common.runs), max_runs),
            render_protocol(protocol_rows(pool, curves, max_runs), "markdown"), "",
            *curves_part(curves, f"{stem}-curves")]
    if all(pair in curves for pair in GAIN_PAIRS):
        lines, figures[f"{stem}-language-gain"] = gain_part(con, pool, curves, max_runs, f"{stem}-language-gain",
                                                            title, resampling)
        text += lines
    else:
        absent = listed([" ".join(pair) for pair in GAIN_PAIRS if pair not in curves])
        compared = " with ".join(" ".join(pair) for pair in GAIN_PAIRS)
        skipped.append(Skipped(pool.name, "per-language gain", f"it compares {compared}, and {absent} is not "
                               "computed here"))
    scatter = scatter_part(pool, facts, f"{stem}-source-vs-target", title)
    if scatter is not None:
        lines, figures[f"{stem}-source-vs-target"] = scatter
        text += lines
    else:
        skipped.append(Skipped(pool.name, "source-vs-target figure", "fewer than 3 runs have SRC-DEV scores"))
    return "\n".join(text), figures, skipped


def skipped_part(skipped: list[Skipped]) -> list[str]:
    """The report's list of what it could not compute, and why."""
    if not skipped:
        return []
    return ["## Skipped", "", "What this report leaves out, and why:", "",
            *[f"- {note.removeprefix('skipped ')}" for note in skip_notes(skipped)], ""]


@dataclass
class ReportContents:
    """The report's pool sections (Markdown), their figures ({file stem: matplotlib Figure}) and what
    was left out."""

    sections: list[str]
    figures: dict
    skipped: list[Skipped]

    @property
    def notes(self) -> list[str]:
        return skip_notes(self.skipped)


def report_sections(con, pools, pairs, options: DrawOptions, max_runs: int, resampling: ResamplingOptions,
                    skip_missing: bool = False, skip_pools: bool = False) -> ReportContents:
    """Every pool's section and figures. `skip_missing` (the pairs were not chosen): pairs whose
    averaged models are missing are left out; `skip_pools` (the pools were not chosen): a pool
    without what the report needs is left out. Both are listed as skipped; otherwise they are errors."""
    rng = resampling.rng()
    contents, errors = ReportContents([], {}, []), []
    for task, model in pools:
        pool = load_pool(con, task, model)
        try:
            text, figures, left_out = pool_section(con, pool, pairs, options, max_runs, rng, resampling, skip_missing)
        except IncompletePool as gap:
            if not skip_pools:
                raise
            contents.skipped.append(Skipped(pool.name, "", gap.short.removeprefix(f"{pool.name}: ")))
            errors.append(gap)
            continue
        contents.sections.append(text)
        contents.figures.update(figures)
        contents.skipped += left_out
    if not contents.sections:
        raise errors[0]
    return contents


def write_report(con, pools, pairs, options: DrawOptions, max_runs: int, out: Path,
                 resampling: ResamplingOptions, skip_missing: bool = False,
                 skip_pools: bool = False) -> tuple[Path, Path, list[str]]:
    """report.md and report.html in `out` with their figures, and one note per thing left out
    (`report_sections` says what is left out and when)."""
    out.mkdir(parents=True, exist_ok=True)
    contents = report_sections(con, pools, pairs, options, max_runs, resampling, skip_missing, skip_pools)
    for stem, figure in contents.figures.items():
        save_figure(figure, out / stem)
    intro = ["# ofa-eval report", "",
             "Mean over draws for r = 1..R runs (percent); bands are "
             f"{int(resampling.level * 100)}% percentile bootstrap intervals of the mean over draws "
             f"({resampling.n_resamples} resamples, seed {resampling.seed}). Draws: {options.describe()}.", ""]
    markdown = "\n".join(intro + skipped_part(contents.skipped) + contents.sections)
    md_path = out / "report.md"
    md_path.write_text(markdown)
    html_path = out / "report.html"
    html_path.write_text(markdown_to_html(markdown))
    return md_path, html_path, contents.notes


def markdown_to_html(markdown: str) -> str:
    """Just enough Markdown for this report: headings, paragraphs, lists, images and pipe tables."""
    body, table, items = [], [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>")
            items.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}"></p>')
        elif line.startswith("**") and line.endswith("**"):
            body.append(f"<p><b>{html.escape(line.strip('*'))}</b></p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;font-size:15px}"
             "table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    return f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ofa-eval report</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
