"""Batches: padding features into tensors, and the order in which examples are visited.

Training order is a pure function of (seed, epoch), so a resumed run visits exactly the batches
an uninterrupted run would. With `group_by_length` (used on a GPU), each epoch's permutation is
cut into chunks of 50 batches, each chunk is sorted by length and cut into batches, and the
batches are shuffled: similar lengths share a batch, so less compute goes to padding.
"""

from __future__ import annotations

import math

from producers.tasks.base import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "start_positions", "end_positions", "labels")
GROUP_CHUNK = 50


def collate(features: list[dict], indices, pad_token_id: int) -> dict:
    """Right-padded `input_ids`, `attention_mask` and any label keys, as tensors."""
    import torch

    rows = [features[i] for i in indices]
    width = max(len(row["input_ids"]) for row in rows)
    batch = {"input_ids": torch.full((len(rows), width), pad_token_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(rows), width), dtype=torch.long)}
    for r, row in enumerate(rows):
        batch["input_ids"][r, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        batch["attention_mask"][r, : len(row["input_ids"])] = 1
    for key in MODEL_INPUTS[1:]:
        if key in rows[0]:
            batch[key] = _labels([row[key] for row in rows], width)
    return batch


def _labels(values: list, width: int):
    import torch

    if not isinstance(values[0], list):
        return torch.tensor(values, dtype=torch.long)
    labels = torch.full((len(values), width), IGNORE_INDEX, dtype=torch.long)
    for r, row in enumerate(values):
        labels[r, : len(row)] = torch.tensor(row, dtype=torch.long)
    return labels


def steps_per_epoch(n_features: int, batch_size: int) -> int:
    return math.ceil(n_features / batch_size)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The batches of one epoch (the last one may be smaller)."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    size = batch_size * GROUP_CHUNK
    batches = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def training_batches(lengths, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                     group_by_length: bool = False):
    """(step, example indices) for steps start_step + 1 .. total_steps, epoch after epoch."""
    per_epoch = steps_per_epoch(len(lengths), batch_size)
    step = start_step
    while step < total_steps:
        epoch, position = divmod(step, per_epoch)
        for indices in epoch_batches(lengths, batch_size, seed, epoch, group_by_length)[position:]:
            step += 1
            yield step, indices
            if step == total_steps:
                return


def eval_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches of similar lengths (longest first); outputs are put back in order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
