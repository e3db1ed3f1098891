"""Models, tokenizers, task heads and devices.

- `load_model`: `AutoModelFor{SequenceClassification,QuestionAnswering,TokenClassification}`
  from a Hub id or a local folder (as `from_pretrained` takes it);
- `build_tiny_model`: a small XLM-R-shaped masked language model built from an
  `XLMRobertaConfig`, with a BPE tokenizer trained on the given texts with `tokenizers`
  (wrapped as a `PreTrainedTokenizerFast`), optionally pretrained on the same texts
  (`producers.pretrain`, which also reads text files for `ofa-eval build-model`), and saved
  as a folder that `load_model` reads like any checkpoint (the quickstart's model);
- the task head (every parameter outside the base model) as a state dict, with a content hash;
- the device, bf16 autocast on a GPU, and quiet transformers logging.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from ofa_eval.common.errors import OfaError

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..3 and its mask token
TINY_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
BUILD_RECORD = "build.json"  # what a model folder was built from (a hash of the texts and settings)
BUILD_FORMAT = 1


def quiet_transformers() -> None:
    """No load reports or download progress bars from transformers."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def auto_class(task):
    import transformers

    return getattr(transformers, task.model_class)


def label_kwargs(label_names) -> dict:
    if not label_names:
        return {}
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)}}


def load_model(task, model_name_or_path: str, label_names=None):
    """The task's model with pretrained weights; the task head is newly initialised."""
    quiet_transformers()
    return auto_class(task).from_pretrained(model_name_or_path, **label_kwargs(label_names))


def model_from_config(task, config_dir):
    """The task's model with random weights, shaped as the config in `config_dir` says."""
    from transformers import AutoConfig

    quiet_transformers()
    return auto_class(task).from_config(AutoConfig.from_pretrained(config_dir))


def load_tokenizer(model_name_or_path: str):
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(model_name_or_path)


# --- the tiny offline model --------------------------------------------------------------------


def train_tokenizer(texts, vocab_size: int = 400):
    """A BPE tokenizer with XLM-R's conventions (metaspace words, `<s> A </s></s> B </s>` pairs).

    (XLM-R's SentencePiece model is a Unigram model, but `tokenizers`' Unigram trainer splits
    even frequent words into characters on a corpus this small; BPE keeps frequent words whole
    and splits the rarer, rewritten ones into subwords.)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    # Splitting on whitespace first keeps the spaces out of the tokens' character offsets.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def tiny_config(tokenizer, **shape):
    from transformers import XLMRobertaConfig

    # No attention dropout: on a CPU it sends attention down a much slower path.
    return XLMRobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514, type_vocab_size=1,
                            attention_probs_dropout_prob=0.0,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, **{**TINY_SHAPE, **shape})


def model_shape(layers: int = 2, hidden: int = 64, heads: int | None = None) -> dict:
    """An XLM-R shape: `heads` attention heads (default: one per 32 hidden units) and a
    feed-forward layer twice as wide as the hidden size (the quickstart's: 2 layers, 64, 2 heads)."""
    heads = heads or max(1, hidden // 32)
    if hidden % heads:
        raise OfaError(f"--hidden {hidden}: not a multiple of the number of attention heads ({heads}, --heads)")
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": 2 * hidden}


def build_tiny_model(directory, texts, seed: int = 0, vocab_size: int = 400, pretraining=None,
                     rebuild: bool = False, progress: bool = False, sources=(), **shape) -> Path:
    """Save a small XLM-R-shaped masked LM and its tokenizer, both made from `texts`, to `directory`.

    The weights are initialised from `seed`, then trained on `texts` by `pretraining` (a
    `producers.pretrain.PretrainSettings`; None leaves them random). Every run of a grid loads
    this folder with `from_pretrained`, as it would a real pretrained checkpoint. `build.json`
    records a hash of the texts and settings: a folder built from the same ones is reused; one
    built from others is replaced with `rebuild`, refused otherwise. Written atomically.
    """
    directory = Path(directory)
    settings = {"format": BUILD_FORMAT, "seed": seed, "vocab_size": vocab_size, "shape": {**TINY_SHAPE, **shape},
                "pretraining": pretraining.record() if pretraining else None}
    fingerprint = _fingerprint(texts, settings)
    if _reusable(directory, fingerprint, rebuild):
        return directory
    if not texts:
        raise OfaError(f"{directory}: no texts to build a model from")
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    losses = _make_model(temporary, texts, settings, pretraining, progress)
    record = {"sha256": fingerprint, "settings": settings, "texts": len(texts), "sources": list(sources),
              "tokenizer": "BPE", "pretraining_loss": _loss_summary(losses)}
    (temporary / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(temporary, directory)
    return directory


def _make_model(folder: Path, texts, settings: dict, pretraining, progress: bool) -> list[float]:
    """Train the tokenizer, initialise and pretrain the model, save both in `folder`; the step losses."""
    import torch
    from transformers import XLMRobertaForMaskedLM

    quiet_transformers()
    tokenizer = train_tokenizer(texts, settings["vocab_size"])
    tokenizer.save_pretrained(folder)  # before encoding, which leaves truncation settings on the tokenizer
    torch.manual_seed(settings["seed"])
    model = XLMRobertaForMaskedLM(tiny_config(tokenizer, **settings["shape"]))
    losses = pretraining.train(model, tokenizer, texts, progress) if pretraining else []
    model.to("cpu").save_pretrained(folder)
    return losses


def _fingerprint(texts, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for text in texts:
        encoded = text.encode()
        digest.update(f"\n{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.hexdigest()


def _reusable(directory: Path, fingerprint: str, rebuild: bool) -> bool:
    """Whether `directory` already holds this build; raises where it holds something to keep."""
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return False
    try:
        recorded = json.loads((directory / BUILD_RECORD).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OfaError(f"{directory}: exists but holds no model made by build-model (no readable {BUILD_RECORD}); "
                       "it is left alone: choose another folder") from None
    if recorded == fingerprint:
        return True
    if rebuild:
        return False
    raise OfaError(f"{directory}: holds a model built from other texts or settings; use --rebuild to replace it "
                   "(models fine-tuned from it are then out of date) or choose another folder")


def _loss_summary(losses: list[float]) -> dict | None:
    """Mean masked-LM loss over the first and the last 5% of the pretraining steps."""
    import math

    if not losses:
        return None
    window = max(1, len(losses) // 20)
    first, last = ([x for x in part if not math.isnan(x)] for part in (losses[:window], losses[-window:]))
    return {"first_steps": sum(first) / max(1, len(first)), "last_steps": sum(last) / max(1, len(last)),
            "steps_averaged": window}


# --- task heads ----------------------------------------------------------------------------------


def head_names(model) -> list[str]:
    """Names of the task head's parameters: everything outside the base model."""
    prefix = model.base_model_prefix + "."
    return [name for name, _ in model.named_parameters() if not name.startswith(prefix)]


def head_state(model) -> dict:
    """A CPU copy of the task head's tensors."""
    names = set(head_names(model))
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items() if name in names}


def tensors_sha256(state: dict) -> str:
    """A content hash of named tensors (names, dtypes, shapes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- devices ---------------------------------------------------------------------------------------


def pick_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")




def autocast(device):
    """bf16 autocast on a GPU; nothing on a CPU (full float32)."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
