"""`ofa-eval report` writes a self-contained Markdown/HTML report with its figures."""

from html.parser import HTMLParser



def test_report_on_a_synthetic_release(synthetic_store, tmp_path):
    cli = synthetic_store
    out = tmp_path / "report"
    result = cli("report", out, "--task", "nli", "--replay", "-R", 3, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "## nli / tiny-model" in markdown and "accumulative ca" in markdown
    assert "## Skipped" not in markdown  # the synthetic release scores every averaged model of its draws
    gain_rows = [line.split("|")[1].strip() for line in markdown.splitlines()
                 if line.startswith("| ") and "not recorded" in line]
    assert gain_rows == ["indicxnli/hi", "xnli/de", "xnli/sw"]  # the synthetic release's NLI target sets
    images = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                images.append(dict(attrs)["src"])

    Images().feed((out / "report.html").read_text())
    assert images == ["nli-tiny-model-curves.png", "nli-tiny-model-language-gain.png",
                      "nli-tiny-model-source-vs-target.png"]
    for name in images:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / name).with_suffix(".svg").read_text().lstrip().startswith("<?xml")
