"""Fine-tuning: the optimizer, the learning-rate schedule and the training loop (paper, appendix A.1).

AdamW with betas (0.9, 0.999), eps 1e-8 and weight decay on weight matrices only; a linear
schedule with warm-up; gradients clipped to `max_grad_norm`. `fit` is the loop every run and
the head-alignment fine-tune share: `producers.train` adds snapshots, CA and resuming on top of
it, `producers.heads` trains the head that the runs of a grid start from.
"""

from __future__ import annotations

import math
import sys

from producers.batching import collate, steps_per_epoch, training_batches
from producers.modeling import autocast, load_tokenizer, pick_device


def make_optimizer(model, config):
    """AdamW over the trainable parameters; no weight decay on biases and LayerNorm weights."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused)


def make_scheduler(optimizer, config, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)


def fit(model, features, config, optimizer, scheduler, total_steps: int, *, start_step: int = 0,
        pad_token_id: int = 1, on_step=None, progress=None) -> None:
    """The training loop: steps start_step + 1 .. total_steps, calling on_step(step) after each."""
    import torch

    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    lengths = [len(f["input_ids"]) for f in features]
    model.train()
    for step, indices in training_batches(lengths, config.batch_size, config.seed, total_steps, start_step,
                                          group_by_length=device.type == "cuda"):
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(features, indices, pad_token_id).items()}
        with autocast(device):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress.update(1)
            if step % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if on_step is not None:
            on_step(step)


def fine_tune(model, task, data, config, progress: bool = False) -> None:
    """Train `model` on the task's training data with no snapshots (the head-alignment fine-tune)."""
    from tqdm import tqdm

    if progress:
        tqdm.write(f"{config.task} head fine-tune: tokenizing {len(data.train)} training examples", file=sys.stderr)
    model.to(pick_device())
    tokenizer = load_tokenizer(config.model_name_or_path)
    features = task.train_features(data.train, tokenizer, config, data.label_names)
    total = config.epochs * steps_per_epoch(len(features), config.batch_size)
    optimizer = make_optimizer(model, config)
    with tqdm(total=total, desc=f"{config.task} head fine-tune", unit="step", disable=not progress) as bar:
        fit(model, features, config, optimizer, make_scheduler(optimizer, config, total), total,
            pad_token_id=tokenizer.pad_token_id, progress=bar)
