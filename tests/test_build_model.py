"""`ofa-eval build-model`: a small model and tokenizer made from text files, pretrained by MLM.

The model is checked through transformers alone: the folder loads with the Auto classes, and
the masked-LM loss on held-out lines, computed here with a fixed masking pattern, is lower
after pretraining than at the random initialisation it starts from.
"""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = ["--vocab-size", "200", "--layers", "1", "--hidden", "32", "--seed", "3"]
STEPS = 300


def build(*args):
    from ofa_eval.cli import main

    return CliRunner().invoke(main, ["build-model", *map(str, args), "--quiet"], catch_exceptions=False)


def write_lines(path, texts):
    path.write_text("".join(text + "\n" for text in texts))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few hundred lines of two languages, in two files, and held-out lines of the same languages."""
    import torch

    from producers import synthetic

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("build-model")
    files = [write_lines(root / f"{language}.txt", synthetic.unlabeled_texts(language, per_task=30))
             for language in ("en", "far")]
    held_out = [text for language in ("en", "far") for text in synthetic.unlabeled_texts(language, 10, seed=1)]
    return root, files, held_out


@pytest.fixture(scope="module")
def pretrained(corpus):
    root, files, _ = corpus
    result = build(*files, "--out", root / "model", "--pretrain-steps", STEPS, *TINY)
    assert result.exit_code == 0, result.output
    return root / "model"


def masked_lm_loss(folder, texts) -> float:
    """Mean cross-entropy of predicting every 4th real token of `texts`, each replaced by <mask>."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    real = (batch.pop("special_tokens_mask") == 0) & (batch["attention_mask"] == 1)
    chosen = real & (torch.cumsum(real, dim=1) % 4 == 0)
    labels = torch.where(chosen, batch["input_ids"], torch.full_like(batch["input_ids"], -100))
    batch["input_ids"] = torch.where(chosen, torch.full_like(labels, tokenizer.mask_token_id), batch["input_ids"])
    with torch.no_grad():
        logits = model(**batch).logits
    return torch.nn.functional.cross_entropy(logits[chosen], labels[chosen]).item()


def test_the_folder_loads_as_a_tokenizer_and_task_models(pretrained):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    encoded = tokenizer("the old cat sleeps", "in the garden .")
    assert encoded["input_ids"][0] == tokenizer.convert_tokens_to_ids("<s>")
    assert len(tokenizer) == 200
    classifier = AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=3)
    assert classifier.config.hidden_size == 32 and classifier.config.num_hidden_layers == 1
    assert AutoModelForTokenClassification.from_pretrained(pretrained, num_labels=5).num_labels == 5
    assert {"config.json", "model.safetensors", "tokenizer.json", "build.json"} <= set(os.listdir(pretrained))


def test_pretraining_lowers_the_held_out_masked_lm_loss(corpus, pretrained):
    root, files, held_out = corpus
    result = build(*files, "--out", root / "random-init", "--pretrain-steps", 0, *TINY)
    assert result.exit_code == 0, result.output
    assert "weights left random" in result.output
    # the same seed and texts: the same tokenizer and the same initial weights as the pretrained model
    assert (root / "random-init" / "tokenizer.json").read_text() == (pretrained / "tokenizer.json").read_text()
    random_loss, pretrained_loss = masked_lm_loss(root / "random-init", held_out), masked_lm_loss(pretrained, held_out)
    assert random_loss > 4.5  # about ln(200) = 5.3: the initial model predicts no token better than another
    assert pretrained_loss < random_loss - 0.5


def test_a_second_call_reuses_the_folder(corpus, pretrained):
    root, files, _ = corpus
    weights = pretrained / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    result = build(*files, "--out", pretrained, "--pretrain-steps", STEPS, *TINY)
    assert result.exit_code == 0, result.output
    assert "reused" in result.output
    assert weights.stat().st_mtime_ns == stamp


def test_other_texts_are_refused_unless_rebuild(corpus, tmp_path):
    root, files, _ = corpus
    folder = tmp_path / "model"
    assert build(files[0], "--out", folder, "--pretrain-steps", 5, *TINY).exit_code == 0
    first = json.loads((folder / "build.json").read_text())["sha256"]
    refused = build(*files, "--out", folder, "--pretrain-steps", 5, *TINY)
    assert refused.exit_code == 2
    assert refused.output.startswith(f"error: {folder}: holds a model built from other texts or settings")
    assert json.loads((folder / "build.json").read_text())["sha256"] == first
    other_settings = build(files[0], "--out", folder, "--pretrain-steps", 6, *TINY)
    assert other_settings.exit_code == 2
    rebuilt = build(*files, "--out", folder, "--pretrain-steps", 5, *TINY, "--rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    record = json.loads((folder / "build.json").read_text())
    assert record["sha256"] != first and record["texts"] == sum(len(f.read_text().splitlines()) for f in files)


def test_the_same_inputs_build_the_same_weights(corpus, tmp_path):
    from safetensors.numpy import load_file

    _, files, _ = corpus
    for name in ("a", "b"):
        assert build(*files, "--out", tmp_path / name, "--pretrain-steps", 5, *TINY).exit_code == 0
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert sorted(a) == sorted(b)
    assert all((a[key] == b[key]).all() for key in a)


def test_a_folder_it_did_not_make_is_left_alone(corpus, tmp_path):
    _, files, _ = corpus
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    result = build(*files, "--out", tmp_path / "mine", *TINY)
    assert result.exit_code == 2 and "no model made by build-model" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me\n"


def test_jsonl_and_conll_files_give_their_texts(tmp_path):
    from producers.pretrain import read_texts

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"premise": "a cat", "hypothesis": "an animal", "label": 0}\n\n{"tokens": ["x", "y"]}\n')
    conll = tmp_path / "ner.conll"
    conll.write_text("-DOCSTART- O\n\nanna B-PER\nsings O\n\nlima B-LOC\n")
    plain = write_lines(tmp_path / "plain.txt", ["first line", "", "  second line  "])
    assert read_texts(jsonl) == ["a cat", "an animal", "x y"]
    assert read_texts(conll) == ["anna sings", "lima"]
    assert read_texts(plain) == ["first line", "second line"]


MASAKHANER2 = Path(__file__).resolve().parents[2] / "shared" / "masakhaner2-sample"


def masakhaner_file(language, split):
    path = MASAKHANER2 / language / f"{split}.txt"
    if not path.is_file():
        pytest.skip(f"the MasakhaNER 2.0 sample is not at {MASAKHANER2} (it lives in ../shared)")
    return path


def sentences_by_hand(path):
    """The README's old awk workaround, in Python: first column of each line, a sentence per blank line."""
    sentences, tokens = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            tokens.append(line.split()[0])
        elif tokens:
            sentences.append(" ".join(tokens))
            tokens = []
    return sentences


@pytest.mark.parametrize(("language", "split"), [("yor", "dev"), ("pcm", "train")])
def test_masakhaner_txt_files_are_read_as_sentences(language, split):
    from producers.pretrain import read_texts

    path = masakhaner_file(language, split)
    texts = read_texts(path)
    assert texts == sentences_by_hand(path)
    assert len(texts) > 500 and not any(" O " in f" {text} " for text in texts[:50])  # no tags among the words


def test_build_model_takes_masakhaner_txt_and_plain_txt_together(tmp_path):
    conll = masakhaner_file("hau", "dev")
    plain = write_lines(tmp_path / "plain.txt", ["Di man go market", "", "Ina son ka"])
    result = build(conll, plain, "--out", tmp_path / "model", "--pretrain-steps", 0, *TINY)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "model" / "build.json").read_text())
    assert record["texts"] == len(sentences_by_hand(conll)) + 2


def test_a_plain_txt_with_tag_like_words_on_some_lines_stays_plain(tmp_path):
    from producers.pretrain import read_texts

    plain = write_lines(tmp_path / "notes.txt", ["the answer is O", "no tag here", "see B-PER"])
    assert read_texts(plain) == ["the answer is O", "no tag here", "see B-PER"]


@pytest.mark.parametrize(("content", "problem"), [(None, "no such file"), ("\n \n", "no text in it")])
def test_unreadable_texts_are_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_text(content)
    result = build(path, "--out", tmp_path / "model", *TINY)
    assert result.exit_code == 2
    assert result.output == f"error: {path}: {problem}\n"


def test_a_hidden_size_the_heads_do_not_divide_is_a_one_line_error(corpus, tmp_path):
    _, files, _ = corpus
    result = build(*files, "--out", tmp_path / "model", "--hidden", 100, "--heads", 3)
    assert result.exit_code == 2
    assert result.output == "error: --hidden 100: not a multiple of the number of attention heads (3, --heads)\n"
    assert not (tmp_path / "model").exists()
