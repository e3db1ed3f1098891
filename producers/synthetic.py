"""A small generated multilingual corpus for NLI, extractive QA and NER (the offline quickstart).

English sentences come from templates over a small vocabulary (people, places, organisations,
animals, colours, verbs). The target "languages" are English with part of the vocabulary
rewritten by a deterministic rule; each word is rewritten or kept by a hash of (language,
word), so every language shares some words with English and changes the rest:

| language | share of words rewritten | rewrite |
|---|---|---|
| `near` | 25% | vowels shifted by one (a->e, e->i, ...) |
| `mid` | 50% | vowels shifted by two, then `-i` appended |
| `far` | 85% | vowels shifted by three, word reversed, then `-ta` appended |

A model trained on English can only transfer through the words (and subwords) that the target
language shares with English, so transfer works, but not fully, and less the farther the
language; how well a run transfers depends on its hyperparameters. Entities are rewritten like
any word (a form of transliteration). Dates appear in every language, but only the target
languages annotate them (as MasakhaNER does, while the English data, like WikiANN, has no DATE
type); the NER gold of the targets therefore maps DATE to O.

`write_corpus(directory)` writes the files the quickstart grid reads:
`<task>/<language>/<split>.jsonl` for NLI and QA (the records `producers.data` reads) and
`ner/<language>/<split>.conll` for NER. The source language `en` has `train` and
`validation`; each target language has `validation` and `test`.

`write_unlabeled(directory)` writes `<language>.txt` for every language, the unlabeled text
that the quickstart's model is pretrained on (as XLM-R was pretrained on text of many
languages): the texts of examples generated apart from every task split, without labels.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

SOURCE = "en"
LANGUAGES = {"near": (0.25, 1, False, ""), "mid": (0.5, 2, False, "i"), "far": (0.85, 3, True, "ta")}
SPLITS = {SOURCE: ("train", "validation"), **{language: ("validation", "test") for language in LANGUAGES}}
SIZES = {"train": 500, "validation": 80, "test": 100}
UNLABELED_PER_TASK = 1000  # examples per task and language whose texts form the pretraining corpus
DATASETS = {"nli": "synth-nli", "qa": "synth-qa", "ner": "synth-ner"}
VOWELS = "aeiou"
PUNCTUATION = {".", "?", ","}

FIRST_NAMES = ["anna", "boris", "carla", "dmitri", "elena", "farid", "greta", "hassan", "ines", "jonas",
               "kofi", "lena", "marco", "nadia", "omar", "paula", "rafael", "sofia", "tomas", "yara"]
SURNAMES = ["berg", "costa", "diallo", "okafor", "novak", "silva", "tanaka", "weber"]
CITIES = [["paris"], ["lagos"], ["lima"], ["oslo"], ["cairo"], ["delhi"], ["quito"], ["accra"], ["hanoi"],
          ["dakar"], ["san", "jose"], ["port", "louis"], ["new", "delhi"], ["santa", "cruz"]]
ORGS = [["unesco"], ["acme", "corp"], ["nova", "bank"], ["zenith", "labs"], ["delta", "air"], ["orbit", "media"],
        ["green", "river", "trust"], ["north", "star", "bank"], ["lumen"], ["kora", "foods"]]
MONTHS = ["january", "march", "april", "june", "july", "october", "november", "december"]
ANIMALS = ["cat", "dog", "horse", "bird", "goat", "fox", "rabbit", "duck"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
ADJECTIVES = ["small", "big", "old", "young", "happy", "tired"]
PLACES = ["garden", "kitchen", "market", "river", "school", "forest", "field", "barn"]
FOODS = ["bread", "rice", "apples", "carrots", "cheese"]
VERBS = [("sees", "see"), ("likes", "like"), ("chases", "chase"), ("feeds", "feed"), ("follows", "follow"),
         ("watches", "watch")]


# --- languages -----------------------------------------------------------------------------------


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings."""
    return int(hashlib.sha256(":".join(parts).encode()).hexdigest()[:8], 16) / 2**32


def translate_word(word: str, language: str) -> str:
    """The word in a target language (English words are returned unchanged)."""
    if language == SOURCE or word in PUNCTUATION or word.isdigit():
        return word
    share, shift, reverse, suffix = LANGUAGES[language]
    if _unit(language, word) >= share:
        return word
    rewritten = "".join(VOWELS[(VOWELS.index(c) + shift) % 5] if c in VOWELS else c for c in word)
    return (rewritten[::-1] if reverse else rewritten) + suffix


def render(words: list[str], language: str) -> list[str]:
    return [translate_word(word, language) for word in words]


# --- NLI -------------------------------------------------------------------------------------------


def nli_example(rng: random.Random) -> tuple[list[str], list[str], int]:
    """(premise words, hypothesis words, label) with label 0 entailment, 1 neutral, 2 contradiction."""
    first, second, third = rng.sample(ANIMALS, 3)
    place, other_place = rng.sample(PLACES, 2)
    adjective, verb = rng.choice(ADJECTIVES), rng.choice(VERBS)
    premise = ["the", adjective, first, verb[0], "the", second, "in", "the", place, "."]
    label = rng.randrange(3)
    hypotheses = [
        [["the", first, verb[0], "the", second, "."], ["the", first, "is", "in", "the", place, "."],
         ["a", adjective, first, verb[0], "a", second, "."]],
        [["the", first, "eats", rng.choice(FOODS), "."], ["the", third, "is", "in", "the", place, "."],
         ["the", second, "is", rng.choice(ADJECTIVES), "."]],
        [["the", first, "does", "not", verb[1], "the", second, "."],
         ["the", first, "is", "in", "the", other_place, "."], ["the", second, "is", "not", "in", "the", place, "."]],
    ]
    return premise, rng.choice(hypotheses[label]), label


def nli_records(rng, n: int, language: str, split: str) -> list[dict]:
    records = []
    for i in range(n):
        premise, hypothesis, label = nli_example(rng)
        records.append({"id": f"{language}-{split}-{i:05d}", "premise": " ".join(render(premise, language)),
                        "hypothesis": " ".join(render(hypothesis, language)), "label": label})
    return records


# --- QA --------------------------------------------------------------------------------------------


def _person(rng) -> list[str]:
    name = [rng.choice(FIRST_NAMES)]
    return name + [rng.choice(SURNAMES)] if rng.random() < 0.3 else name


def qa_fact(rng, person: list[str], kind: int) -> tuple[list[str], list[str], list[str]]:
    """(sentence, question, answer) words for one fact of a kind (0 home, 1 employer, 2 pet) about a person."""
    if kind == 0:
        city = rng.choice(CITIES)
        return [*person, "lives", "in", *city, "."], ["where", "does", *person, "live", "?"], city
    if kind == 1:
        org = rng.choice(ORGS)
        return [*person, "works", "for", *org, "."], ["who", "does", *person, "work", "for", "?"], org
    thing = [rng.choice(COLOURS), rng.choice(ANIMALS)]
    return [*person, "owns", "a", *thing, "."], ["what", "does", *person, "own", "?"], thing


def qa_example(rng) -> tuple[list[list[str]], list[str], int, list[str]]:
    """(context sentences, question, index of the answering sentence, answer words)."""
    people = []
    n_people = rng.randint(3, 5)
    while len(people) < n_people:
        person = _person(rng)
        if person[0] not in {p[0] for p in people}:
            people.append(person)
    # The asked kind of fact is often unique in the context (found by its kind alone); otherwise
    # the question's name must be matched.
    asked, asked_kind = rng.randrange(len(people)), rng.randrange(3)
    kinds = [asked_kind if i == asked else rng.choice([k for k in range(3) if k != asked_kind] * 6 + [asked_kind])
             for i in range(len(people))]
    facts = [qa_fact(rng, person, kind) for person, kind in zip(people, kinds)]
    return [sentence for sentence, _, _ in facts], facts[asked][1], asked, facts[asked][2]


def qa_records(rng, n: int, language: str, split: str) -> list[dict]:
    records = []
    for i in range(n):
        sentences, question, asked, answer = qa_example(rng)
        rendered = [render(sentence, language) for sentence in sentences]
        words = [word for sentence in rendered for word in sentence]
        answer_words = render(answer, language)
        first = sum(map(len, rendered[:asked])) + _find(rendered[asked], answer_words)
        start = len(" ".join(words[:first])) + (1 if first else 0)
        context, text = " ".join(words), " ".join(answer_words)
        assert context[start:start + len(text)] == text
        records.append({"id": f"{language}-{split}-{i:05d}", "question": " ".join(render(question, language)),
                        "context": context, "answers": {"text": [text], "answer_start": [start]}})
    return records


def _find(words: list[str], span: list[str]) -> int:
    return next(i for i in range(len(words)) if words[i:i + len(span)] == span)


# --- NER -------------------------------------------------------------------------------------------


def _entity(rng, kind: str) -> list[str]:
    if kind == "PER":
        return _person(rng)
    return list(rng.choice(CITIES if kind == "LOC" else ORGS))


NER_TEMPLATES = [
    ["PER", "visited", "LOC", "with", "PER", "."],
    ["PER", "works", "for", "ORG", "in", "LOC", "."],
    ["the", "office", "of", "ORG", "is", "in", "LOC", "."],
    ["yesterday", "PER", "met", "PER", "near", "the", "river", "."],
    ["in", "DATE", "PER", "flew", "to", "LOC", "."],
    ["ORG", "hired", "PER", "in", "DATE", "."],
    ["the", "old", "cat", "sleeps", "in", "the", "garden", "."],
]


def ner_sentence(rng, annotate_dates: bool) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for slot in rng.choice(NER_TEMPLATES):
        if slot == "DATE":
            date = [rng.choice(MONTHS)] + ([str(rng.randint(1990, 2024))] if rng.random() < 0.5 else [])
            words += date
            tags += [f"{'B' if i == 0 else 'I'}-DATE" if annotate_dates else "O" for i in range(len(date))]
        elif slot in ("PER", "LOC", "ORG"):
            entity = _entity(rng, slot)
            words += entity
            tags += [f"{'B' if i == 0 else 'I'}-{slot}" for i in range(len(entity))]
        else:
            words.append(slot)
            tags.append("O")
    return words, tags


def ner_records(rng, n: int, language: str, split: str) -> list[dict]:
    records = []
    for i in range(n):
        words, tags = ner_sentence(rng, annotate_dates=language != SOURCE)
        records.append({"id": f"{language}-{split}-{i:05d}", "tokens": render(words, language), "tags": tags})
    return records


# --- files -----------------------------------------------------------------------------------------

GENERATORS = {"nli": nli_records, "qa": qa_records, "ner": ner_records}


def generate(task: str, language: str, split: str, n: int, seed: int = 0) -> list[dict]:
    """Records of one task, language and split; deterministic for a seed."""
    rng = random.Random(f"{seed}:{task}:{language}:{split}")
    return GENERATORS[task](rng, n, language, split)


def write_corpus(directory, seed: int = 0, sizes: dict | None = None) -> Path:
    """Write every task's files under `directory` (skipped when already complete)."""
    directory = Path(directory)
    marker = directory / ".complete"
    if marker.is_file():
        return directory
    sizes = {**SIZES, **(sizes or {})}
    for task in GENERATORS:
        for language, splits in SPLITS.items():
            for split in splits:
                records = generate(task, language, split, sizes[split], seed)
                _write_records(directory / task / language, split, task, records)
    marker.write_text("synthetic corpus complete\n")
    return directory


def _write_records(folder: Path, split: str, task: str, records: list[dict]) -> None:
    from producers.artifacts import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    if task == "ner":
        lines = ["\n".join(f"{w} {t}" for w, t in zip(r["tokens"], r["tags"])) + "\n" for r in records]
        path, text = folder / f"{split}.conll", "\n".join(lines)
    else:
        path, text = folder / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in records)
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def corpus_texts(directory) -> list[str]:
    """Every text of the written corpus, all tasks and languages (a tokenizer's training data in tests)."""
    from producers.pretrain import read_texts

    paths = sorted(Path(directory).rglob("*.jsonl")) + sorted(Path(directory).rglob("*.conll"))
    return [text for path in paths for text in read_texts(path)]


# --- unlabeled text (the quickstart model's pretraining corpus) -----------------------------------


def unlabeled_texts(language: str, per_task: int = UNLABELED_PER_TASK, seed: int = 0) -> list[str]:
    """Unlabeled text of one language: the texts of `per_task` fresh examples of every task.

    Drawn from the same generators as the task data but as a split of its own ("unlabeled"),
    so none of it is an evaluation example; labels are dropped.
    """
    from producers.pretrain import record_texts

    return [text for task in GENERATORS for record in generate(task, language, "unlabeled", per_task, seed)
            for text in record_texts(record)]


def write_unlabeled(directory, seed: int = 0, per_task: int = UNLABELED_PER_TASK) -> list[Path]:
    """`<directory>/<language>.txt` for English and every target language, one text per line."""
    from producers.artifacts import atomic_path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for language in (SOURCE, *LANGUAGES):
        path = directory / f"{language}.txt"
        with atomic_path(path) as temporary:
            temporary.write_text("".join(text + "\n" for text in unlabeled_texts(language, per_task, seed)))
        paths.append(path)
    return paths
