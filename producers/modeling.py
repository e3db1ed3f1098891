"""Models, tokenizers, task heads and devices.

- `load_model`: `AutoModelFor{SequenceClassification,QuestionAnswering,TokenClassification}`
  from a Hub id or a local folder (as `from_pretrained` takes it);
- `build_tiny_model`: the offline quickstart's tiny XLM-R-shaped model, built from an
  `XLMRobertaConfig`, with a Unigram tokenizer trained locally with `tokenizers` and wrapped as
  a `PreTrainedTokenizerFast`; saved as a folder that `load_model` reads like any checkpoint;
- the task head (every parameter outside the base model) as a state dict, with a content hash;
- the device, bf16 autocast on a GPU, and quiet transformers logging.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..3 and its mask token
TINY_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


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


def build_tiny_model(directory, texts, seed: int = 0, vocab_size: int = 400, **shape) -> Path:
    """Save a tiny "pretrained" XLM-R (random weights from `seed`) and its tokenizer to `directory`.

    Every run loads this folder with `from_pretrained`, so all runs start from the same body,
    as they would from a real pretrained checkpoint. Written atomically (a temporary folder).
    """
    import torch
    from transformers import XLMRobertaModel

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    quiet_transformers()
    tokenizer = train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    model = XLMRobertaModel(tiny_config(tokenizer, **shape), add_pooling_layer=False)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    os.replace(temporary, directory)
    return directory


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
