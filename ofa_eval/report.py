"""`ofa-eval report`: a Markdown and HTML report with the paper-style tables and figures.

For every (task, model): the protocol table (mean ± std over draws), a figure of score against
r with bootstrap confidence bands for every strategy, the per-language gain of accumulative CA
averaging over Max SRC-DEV (SRC-DEV variant) at r = R, and the runs' source-language validation
score against their mean target test score with its correlation. Figures are PNG and SVG.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ofa_eval import bootstrap
from ofa_eval.analysis import language_scores, per_language_at
from ofa_eval.correlation import pearson, spearman
from ofa_eval.formatting import render_protocol
from ofa_eval.protocol import DrawOptions, Pool, load_pool, pair_curves, pool_max_runs, protocol_rows

COLORS = {"max-src-dev": "tab:blue", "max-trg-dev": "tab:green", "accumulative": "tab:red", "soup": "tab:purple"}
STYLES = {"last": ":", "src-dev": "--", "ca": "-", "trg-dev": "-", "top": "-."}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_bands(scores: np.ndarray, rng, n_resamples: int, level: float):
    """Mean over draws per r, with a percentile bootstrap band over draws."""
    boot = scores[bootstrap.paired_indices(scores.shape[0], n_resamples, rng)].mean(axis=1)
    low, high = bootstrap.percentile_interval(boot.T, level)
    return scores.mean(axis=0), low, high


def plot_curves(curves: dict, out: Path, title: str, rng, n_resamples: int, level: float) -> list[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (strategy, variant), (_, scores) in curves.items():
        mean, low, high = mean_bands(scores, rng, n_resamples, level)
        r = np.arange(1, len(mean) + 1)
        color, style = COLORS[strategy], STYLES.get(variant, STYLES["top"] if variant.startswith("top") else "-")
        ax.plot(r, mean, style, color=color, label=f"{strategy} {variant}", linewidth=1.8)
        ax.fill_between(r, low, high, color=color, alpha=0.08)
    ax.set_xlabel("runs r")
    ax.set_ylabel("mean target-language test score (%)")
    ax.set_title(f"{title}: score against r ({int(level * 100)}% bootstrap bands over draws)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_language_gain(languages: list[str], gain: np.ndarray, out: Path, title: str, r: int) -> list[Path]:
    plt = _pyplot()
    order = np.argsort(gain)
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.16 * len(languages) + 1)))
    ax.barh(np.array(languages)[order], gain[order], color=np.where(gain[order] >= 0, "tab:red", "tab:blue"))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"accumulative CA minus Max SRC-DEV (S-DEV), r = {r} (points)")
    ax.set_title(f"{title}: per-language gain of averaging")
    ax.tick_params(axis="y", labelsize=6)
    return _save(fig, out)


def plot_source_vs_target(source: np.ndarray, target: np.ndarray, out: Path, title: str) -> list[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(source, target, s=14, alpha=0.7)
    ax.set_xlabel("source-language validation score (%)")
    ax.set_ylabel("mean target test score (%)")
    ax.set_title(f"{title}: SRC-DEV runs\nPearson {float(pearson(source, target)):.2f}, "
                 f"Spearman {float(spearman(source, target)):.2f}")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def _save(fig, out: Path) -> list[Path]:
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=130)
    _pyplot().close(fig)
    return paths


def pool_section(con, pool: Pool, pairs, options: DrawOptions, max_runs: int, out: Path, rng,
                 n_resamples: int, level: float) -> tuple[str, dict]:
    """Markdown for one pool, and the figures it refers to."""
    max_runs = pool_max_runs(pool, max_runs)
    _, curves = pair_curves(con, pool, pairs, options, max_runs)
    title = f"{pool.task} / {pool.model}"
    stem = f"{pool.task}-{pool.model}"
    figures = {"curves": plot_curves(curves, out / f"{stem}-curves", title, rng, n_resamples, level)}
    text = [f"## {title}", "", render_protocol(protocol_rows(pool, curves, max_runs), "markdown"), "",
            f"![score against r]({figures['curves'][0].name})", ""]
    tables = language_scores(con, pool)
    if ("accumulative", "ca") in curves and ("max-src-dev", "src-dev") in curves:
        averaged = per_language_at(pool, curves[("accumulative", "ca")][0], "accumulative", "ca", max_runs, tables)
        selected = per_language_at(pool, curves[("max-src-dev", "src-dev")][0], "max-src-dev", "src-dev", max_runs,
                                   tables)
        gain = np.nanmean(averaged, axis=0) - np.nanmean(selected, axis=0)
        keep = ~np.isnan(gain)
        languages = [lang for lang, k in zip(tables[2], keep) if k]
        figures["gain"] = plot_language_gain(languages, gain[keep], out / f"{stem}-language-gain", title, max_runs)
        text += [f"Accumulative CA averaging beats Max SRC-DEV (S-DEV) at r = {max_runs} in "
                 f"{int((gain[keep] > 0).sum())} of {int(keep.sum())} target languages "
                 f"(mean gain {np.mean(gain[keep]):+.2f} points).", "",
                 f"![per-language gain]({figures['gain'][0].name})", ""]
    runs = sorted(set(pool.criteria.get("src-dev", {})) & set(pool.target_test.get("src-dev", {})))
    if len(runs) > 2:
        source = np.array([pool.criteria["src-dev"][r] for r in runs])
        target = np.array([pool.target_test["src-dev"][r] for r in runs])
        figures["scatter"] = plot_source_vs_target(source, target, out / f"{stem}-source-vs-target", title)
        text += [f"Across {len(runs)} runs, English validation and mean target test score of SRC-DEV "
                 f"snapshots correlate with Spearman {float(spearman(source, target)):.2f}.", "",
                 f"![source vs target]({figures['scatter'][0].name})", ""]
    return "\n".join(text), figures


def write_report(con, pools, pairs, options: DrawOptions, max_runs: int, out: Path, n_resamples: int,
                 level: float, seed: int) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sections = [pool_section(con, load_pool(con, t, m), pairs, options, max_runs, out, rng, n_resamples, level)[0]
                for t, m in pools]
    intro = ["# ofa-eval report", "",
             "Mean over draws for r = 1..R runs (percent); bands are "
             f"{int(level * 100)}% percentile bootstrap intervals of the mean over draws "
             f"({n_resamples} resamples, seed {seed}). Draws: {options.describe()}.", ""]
    markdown = "\n".join(intro + sections)
    md_path = out / "report.md"
    md_path.write_text(markdown)
    html_path = out / "report.html"
    html_path.write_text(markdown_to_html(markdown))
    return md_path, html_path


def markdown_to_html(markdown: str) -> str:
    """Just enough Markdown for this report: headings, paragraphs, images and pipe tables."""
    body, table = [], []

    def flush_table():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
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
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>ofa-eval report</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>"
