"""`ofa-eval build-model`: masked-language-model pretraining, and the text files it reads.

`build_model_from_files(out, paths)` reads the texts of the files and builds the model folder
with `producers.modeling.build_tiny_model`, pretrained with `PretrainSettings`.

`pretrain(model, tokenizer, texts, settings)` trains an `XLMRobertaForMaskedLM` as XLM-R and
RoBERTa were trained: each line is one sequence (truncated to `max_length` tokens); in every
batch, 15% of the non-special tokens are chosen (a fresh choice each time a line is seen) and
must be predicted, 80% of them replaced by `<mask>`, 10% by a random token and 10% left
as they are (`transformers.DataCollatorForLanguageModeling`). The optimizer and schedule are
the fine-tuning recipe's (`producers.finetune`: AdamW with weight decay on matrices, linear
warm-up then decay, gradient clipping). The batch order and the masking follow from
`settings.seed`, so a build is deterministic on one machine with one thread count.

`read_texts(path)` reads one file of unlabeled text: plain text (one text per non-blank line),
JSON Lines (`.jsonl`/`.json`: the text fields of each record) or CoNLL (`.conll`, `.iob`,
`.bio`, `.iob2`, and any other file whose every line is a token and an NER tag, as MasakhaNER's
`.txt` files are: one text per sentence, its tokens joined by spaces).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.common.errors import OfaError

QUICKSTART_PRETRAIN_STEPS = 1000  # the quickstart's budget and build-model's default
TEXT_FIELDS = ("text", "premise", "hypothesis", "question", "context")


@dataclass(frozen=True)
class PretrainSettings:
    """Masked-language-modelling settings (the field names `make_optimizer`/`make_scheduler` read)."""

    steps: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_length: int = 128
    mask_probability: float = 0.15
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0

    def record(self) -> dict:
        return dataclasses.asdict(self)

    def train(self, model, tokenizer, texts: list[str], progress: bool = False) -> list[float]:
        return pretrain(model, tokenizer, texts, self, progress)


def build_model_from_files(directory, paths, *, vocab_size: int = 400, shape: dict | None = None,
                           pretrain_steps: int = QUICKSTART_PRETRAIN_STEPS, seed: int = 0, rebuild: bool = False,
                           threads: int = 1, progress: bool = False):
    """`ofa-eval build-model`: the texts of `paths`, in order, made into a model folder
    (`producers.modeling.build_tiny_model`) pretrained for `pretrain_steps`, on `threads` CPU threads."""
    from ofa_eval.weights.averaging import torch_threads
    from producers.modeling import build_tiny_model

    texts = [text for path in paths for text in read_texts(path)]
    pretraining = PretrainSettings(steps=pretrain_steps, seed=seed) if pretrain_steps else None
    with torch_threads(threads):
        return build_tiny_model(directory, texts, seed=seed, vocab_size=vocab_size, pretraining=pretraining,
                                rebuild=rebuild, progress=progress, sources=[str(path) for path in paths],
                                **(shape or {}))


# --- texts ------------------------------------------------------------------------------------------


def record_texts(record: dict) -> list[str]:
    """The texts of one JSON record: its TEXT_FIELDS strings, and `tokens` joined by spaces."""
    texts = [record[key] for key in TEXT_FIELDS if isinstance(record.get(key), str)]
    if isinstance(record.get("tokens"), list):
        texts.append(" ".join(map(str, record["tokens"])))
    return [text for text in texts if text.strip()]


def read_texts(path) -> list[str]:
    """The texts of one file, by its extension (see the module docstring)."""
    from producers.formats import (CONLL_SUFFIXES, JSONL_SUFFIXES, looks_like_conll, numbered_lines, read_conll,
                                   read_jsonl)

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        texts = [text for record in read_jsonl(path) for text in record_texts(record)]
    elif suffix in CONLL_SUFFIXES or looks_like_conll(path):
        texts = [" ".join(tokens) for tokens, _ in read_conll(path)]
    else:
        texts = [line.strip() for _, line in numbered_lines(path) if line.strip()]
    if not texts:
        raise OfaError(f"{path}: no text in it")
    return texts


# --- masked language modelling -----------------------------------------------------------------------


def pretrain(model, tokenizer, texts: list[str], settings: PretrainSettings, progress: bool = False) -> list[float]:
    """Train `model` (a masked LM) on `texts` for `settings.steps` steps; returns the loss of every step."""
    from tqdm import tqdm
    from transformers import DataCollatorForLanguageModeling

    from producers.batching import training_batches
    from producers.finetune import make_optimizer, make_scheduler
    from producers.modeling import pick_device

    device = pick_device()
    model.to(device)
    features = _encode(tokenizer, texts, settings.max_length)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=settings.mask_probability,
                                               seed=settings.seed)
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, settings, settings.steps)
    lengths = [len(feature["input_ids"]) for feature in features]
    losses = []
    model.train()
    with tqdm(total=settings.steps, desc="masked-LM pretraining", unit="step", disable=not progress) as bar:
        for step, indices in training_batches(lengths, settings.batch_size, settings.seed, settings.steps,
                                              group_by_length=device.type == "cuda"):
            batch = collator([features[i] for i in indices])
            losses.append(_train_step(model, {k: v.to(device) for k, v in batch.items()}, optimizer, scheduler,
                                      settings.max_grad_norm))
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


def _encode(tokenizer, texts: list[str], max_length: int):
    encodings = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                          return_attention_mask=False)
    return [{"input_ids": ids, "special_tokens_mask": mask}
            for ids, mask in zip(encodings["input_ids"], encodings["special_tokens_mask"])]


def _train_step(model, batch: dict, optimizer, scheduler, max_grad_norm: float) -> float:
    import torch

    from producers.modeling import autocast

    if not (batch["labels"] != -100).any():  # nothing chosen in this batch (only on very short lines)
        scheduler.step()
        return float("nan")
    with autocast(batch["input_ids"].device):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
