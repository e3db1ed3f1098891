"""`ofa-eval report` read as a reader would: does it say what was evaluated, are its figures
readable, and does the page load in a browser?

The references are the run folders' manifests (languages, set sizes, configurations, seeds),
the synthetic release's own truth (coinciding points), and headless Chromium (every image of
report.html loads). The browser check is skipped with a reason where Chromium is absent, and
fails instead under CI=true (the CI script installs Debian's chromium).
"""

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from synthetic_runs import write_grid

SOURCE = "pcm"  # Nigerian Pidgin: a source language that is not English
SVG = "{http://www.w3.org/2000/svg}"


def relabel_source(runs: Path, language: str) -> None:
    """Make the grid's source-language validation set `language` and give each run its own CA
    weights (the grid's CA files are identical, so they would be one averaged model)."""
    for number, manifest_path in enumerate(sorted(runs.glob("*/manifest.json"))):
        manifest = json.loads(manifest_path.read_text())
        for eval_set in manifest["eval_sets"]:
            if eval_set["role"] == "source":
                eval_set["language"] = language
                eval_set["gold"] = eval_set["gold"].replace("__en__", f"__{language}__")
        manifest_path.write_text(json.dumps(manifest))
        own_weights = {"w": np.full((4, 4), 100 + number, dtype=np.float32)}
        save_file(own_weights, str(manifest_path.parent / manifest["ca"]["weights"]))
    for path in list(runs.rglob("*__en__*")):
        path.rename(path.with_name(path.name.replace("__en__", f"__{language}__")))


@pytest.fixture
def pidgin_store(cli, tmp_path):
    """The `cli` fixture over a store of the synthetic NLI grid with Pidgin as source language;
    `.manifests` holds the run folders' manifests."""
    runs = tmp_path / "runs"
    write_grid(runs)
    relabel_source(runs, SOURCE)
    result = cli("ingest", runs, "--quiet")
    assert result.exit_code == 0, result.output
    cli.manifests = [json.loads(p.read_text()) for p in sorted(runs.glob("*/manifest.json"))]
    return cli


def svg_texts(path: Path) -> list[ElementTree.Element]:
    return list(ElementTree.parse(path).getroot().iter(f"{SVG}text"))


def tick_labels(path: Path, axis: str) -> list[str]:
    """The tick labels of an axis ('x' or 'y') of a matplotlib SVG whose text is kept as text."""
    ticks = [g for g in ElementTree.parse(path).getroot().iter(f"{SVG}g")
             if re.fullmatch(f"{axis}tick_\\d+", g.get("id", ""))]
    return [text.text for tick in ticks for text in tick.iter(f"{SVG}text")]


def test_report_says_what_was_evaluated(pidgin_store, tmp_path):
    out = tmp_path / "report"
    result = pidgin_store("report", out, "--strategy", "max-src-dev", "--strategy", "max-trg-dev", "--draws", 4,
                          "--seed", 3, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    manifests = pidgin_store.manifests
    source = {(e["dataset"], e["language"], e["n_examples"]) for m in manifests for e in m["eval_sets"]
              if e["role"] == "source" and e["split"] == "validation"}
    targets = {(e["dataset"], e["language"], e["n_examples"]) for m in manifests for e in m["eval_sets"]
               if e["role"] == "target" and e["split"] == "test"}
    ((dataset, language, size),) = source
    assert language == SOURCE
    assert f"Source language: {dataset}/{language}." in markdown and f"validation set ({size} examples)" in markdown
    assert f"source-language validation ({dataset}/{language})" in markdown
    assert "English" not in markdown and "/en" not in markdown
    for dataset, language, size in targets:
        assert f"{dataset}/{language} ({size} examples)" in markdown
    assert f"unweighted mean over these {len(targets)} sets" in markdown
    rates = sorted({m["learning_rate"] for m in manifests})
    sizes = sorted({m["batch_size"] for m in manifests})
    seeds = sorted({m["seed"] for m in manifests})
    configurations = Counter((m["learning_rate"], m["batch_size"]) for m in manifests)
    assert f"Runs: {len(manifests)} in {len(configurations)} configurations" in markdown
    assert f"learning rates {', '.join(map(repr, rates))} × batch sizes {', '.join(map(str, sizes))}" in markdown
    assert "learning rates 1e-05, 2e-05, 3e-05" in markdown  # as written in a grid file
    per_configuration = set(configurations.values())
    assert len(per_configuration) == 1
    assert f"Seeds: {per_configuration.pop()} per configuration (seeds {', '.join(map(str, seeds))};" in markdown
    assert "Draws: 4 (4 fresh draws with seed 3), each of r = 1..6 runs" in markdown
    scatter = [t.text or "" for t in svg_texts(out / "nli-synthetic-model-source-vs-target.svg")]
    assert any(f"source-language validation (xnli/{SOURCE})" in text for text in scatter)
    assert not any("English" in text for text in scatter)


def test_figures_have_integer_r_ticks_and_readable_text(synthetic_store, tmp_path):
    out = tmp_path / "report"
    result = synthetic_store("report", out, "--task", "nli", "--replay", "-R", 3, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    assert tick_labels(out / "nli-tiny-model-curves.svg", "x") == ["1", "2", "3"]
    for svg in out.glob("*.svg"):
        sizes = [float(m) for t in svg_texts(svg) for m in re.findall(r"font-size: ([\d.]+)px", t.get("style", ""))]
        assert sizes and min(sizes) >= 9, (svg.name, min(sizes))
    legend = [t.text for t in svg_texts(out / "nli-tiny-model-curves.svg")]
    for label in ("Max SRC-DEV src-dev", "Max TRG-DEV trg-dev", "Accumulative ca", "Soup top5"):
        assert label in legend


def test_scatter_shows_points_at_the_same_place(import_synthetic_release, tmp_path):
    cli = import_synthetic_release(seed=1)  # this release has two runs at the same place
    points = Counter((round(run["source_dev_oracle-source"], 6), round(run["target_oracle-source"], 6))
                     for run in cli.truth.runs["nli"].values())
    shared = [n for n in points.values() if n > 1]
    assert shared, "the release was meant to hold coinciding runs"
    out = tmp_path / "report"
    result = cli("report", out, "--task", "nli", "--replay", "-R", 3, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert (f"{sum(shared)} of {len(cli.truth.runs['nli'])} points share a place with another" in markdown
            and f"up to {max(shared)} points at the same place" in markdown)
    labels = [t.text for t in svg_texts(out / "nli-tiny-model-source-vs-target.svg")]
    assert sorted(label for label in labels if label and label.startswith("×") and label[1:].isdigit()) == \
        sorted(f"×{n}" for n in shared)


def test_report_materialize_makes_the_averages_it_needs(pidgin_store, tmp_path):
    args = ("--strategy", "max-src-dev", "--strategy", "accumulative", "--variant", "ca", "-R", 1, "--draws", 3,
            "--bootstrap", 100)
    missing = pidgin_store("report", tmp_path / "without", *args)
    assert missing.exit_code == 2 and "averaged model(s) have no scores" in missing.output
    result = pidgin_store("report", tmp_path / "report", "--materialize", *args)
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| 1 |")]
    # a one-run average is that run's CA model: the same predictions, so the same score as the run
    ((selected, averaged),) = [[cell.strip() for cell in row.strip("|").split("|")[1:]] for row in table]
    assert selected == averaged


def test_report_defaults_skip_averages_not_made_yet_and_say_how_to_make_them(pidgin_store, tmp_path):
    result = pidgin_store("report", tmp_path / "report", "-R", 2, "--draws", 3, "--bootstrap", 100)
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    reason = "averaged model(s) not made yet (make them with `ofa-eval materialize` or --materialize)"
    skipped = markdown[markdown.index("## Skipped"):markdown.index("## nli / synthetic-model")]
    assert "- nli/synthetic-model: accumulative last, accumulative src-dev, accumulative ca and soup top5: " in skipped
    assert reason in skipped and reason in result.stderr
    assert "| 2 |" in markdown and "max-trg-dev trg-dev" in markdown  # the selection strategies are still there


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but chromium is not installed: the CI script must run "
                    "`apt-get install -y --no-install-recommends chromium`")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium); "
                "the browser check of report.html needs it")


# After the page has loaded: for every image, whether it loaded (complete, with a width).
PROBE = """
<img src="this-file-does-not-exist.png" alt="control: must fail to load">
<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify([...document.images].map(
    i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0]));
  document.body.appendChild(out);
});
</script>
"""


def render_in_chromium(page: Path, profile: Path) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",
               "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_loads_in_a_browser(synthetic_store, tmp_path):
    chromium()  # skips (or fails under CI=true) before any work where there is none
    out = tmp_path / "report"
    result = synthetic_store("report", out, "--task", "nli", "--replay", "-R", 3, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    figures = sorted(p.name for p in out.glob("*.svg"))
    probe = out / "probe.html"  # the report, every SVG figure, a control that must fail, and the probe
    probe.write_text(page.replace("</body>", "".join(f'<img src="{name}">' for name in figures) + PROBE + "</body>"))
    dom = render_in_chromium(probe, tmp_path / "chromium-profile")
    found = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading in Chromium"
    loaded = dict(json.loads(found.group(1).replace("&quot;", '"')))
    assert loaded.pop("this-file-does-not-exist.png") is False  # the check can tell a broken image
    pngs = re.findall(r'<img src="([^"]+\.png)"', page)
    assert len(pngs) == 3 and len(figures) == 3
    assert loaded == {name: True for name in pngs + figures}
    assert "<h3>What this is</h3>" in dom and "Source language: xnli/en." in dom
