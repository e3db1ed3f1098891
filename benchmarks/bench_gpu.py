"""The producers on one GPU: fine-tuning throughput against `transformers.Trainer`, bf16 MFU,
weight averaging and prediction throughput, for an XLM-R-large-shaped NLI model.

The model is an `XLMRobertaForSequenceClassification` (3 labels) built from an `XLMRobertaConfig`
of XLM-R large's shape (24 layers, hidden 1024, 16 heads, feed-forward 4096, vocabulary 250002,
514 positions) with random weights: nothing is downloaded. Inputs are synthetic token ids, every
example exactly `--seq-len` tokens (`<s> ... </s>`), so a batch of B examples is B * seq_len
tokens with no padding. What is measured, in one process:

- training: the producers' loop (`producers.finetune.fit` with `make_optimizer` and
  `make_scheduler`, batches from `producers.batching`, driven as `fine_tune` drives it) against
  `transformers.Trainer` with the same settings: the same initial weights, batch size, sequence
  length, number of optimizer steps, AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.01 on
  matrices only; fused on a GPU for both), 10% linear warm-up then linear decay, clipping at
  1.0, bf16 autocast on a GPU (fp32 on a CPU), the same collate function, no evaluation, logging
  or checkpoints. The first `--warmup-steps` optimizer steps are not timed; the clock reads at
  the end of the last untimed and of the last step, after `torch.cuda.synchronize()`. A forward
  hook counts the examples and tokens each loop really fed the model and keeps its last loss;
- MFU: achieved training FLOP/s over the device's dense bf16 peak (`PEAK_BF16_TFLOPS`; blank
  for a device not in the table), with training FLOPs per token

      6 * N + 12 * layers * hidden * seq_len

  where N counts the non-embedding parameters (every parameter outside an `nn.Embedding`:
  encoder layers, the embeddings' LayerNorm, the classification head); 6 N is the forward
  (2 N) and backward (4 N) matrix products, 12 * layers * hidden * seq_len the attention
  scores and their weighted sums (2 * 2 * seq_len * hidden per token and layer forward, times
  3 with the backward). The embedding lookups and the optimizer's update of all parameters
  (the 256M-parameter word embedding included) are memory traffic, counted as no FLOPs;
- averaging: `ofa_eval.weights.averaging.average_checkpoints`, which `ofa-eval materialize`
  calls, over `--average-inputs` safetensors state dicts of the model (written as the runs write
  their weights), in GB/s of input read, against loading every input with
  `safetensors.torch.load_file`, summing and saving with `save_file` (files in the page cache);
- prediction: `producers.predict.predict` over `--predict-examples` examples, in examples/s,
  against a bare loop of forward passes over the same batches already on the device; and one
  materialize prediction step (`producers.predict.Evaluation.predict`: load the averaged weights
  onto the device, predict, write the prediction table).

`--max-seconds` bounds the whole run (default 420): each training loop stops early after 30% of
it (the Trainer is asked for the steps the producers' loop made, and stops likewise), and at the limit the running phase is
interrupted, later phases are skipped and the results so far are written. On one H100 (80 GB)
the defaults fit without gradient checkpointing (`--gradient-checkpointing` turns it on).

    python benchmarks/bench_gpu.py                      # one GPU: results/gpu-<device>.md/.json
    python benchmarks/bench_gpu.py --tiny --device cpu  # tiny shapes: results/gpu-script-cpu-tiny.md/.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import re
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"

from bench_training import machine  # noqa: E402
from timing import median_seconds  # noqa: E402

LARGE_SHAPE = {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096,
               "vocab_size": 250002}
TINY_SHAPE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256,
              "vocab_size": 1000}
# Sizes per mode; every flag left unset takes its mode's value.
DEFAULTS = {
    "large": {"seq_len": 128, "batch_size": 32, "steps": 100, "warmup_steps": 10, "average_inputs": 4,
              "predict_examples": 4096, "repeat": 2},
    "tiny": {"seq_len": 32, "batch_size": 8, "steps": 6, "warmup_steps": 2, "average_inputs": 3,
             "predict_examples": 96, "repeat": 1},
}
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a part of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = (("H100 80GB HBM3", 989.4), ("H100 SXM", 989.4), ("H200", 989.4), ("H100 PCIe", 756.5))
TRAINING_SHARE = 0.3  # of --max-seconds, for each training loop
LABEL_NAMES = ["entailment", "neutral", "contradiction"]
FIRST_ORDINARY_ID = 5  # XLM-R's ids 0..3 are <s> <pad> </s> <unk>; synthetic tokens start after them
PRODUCERS, TRAINER = "producers", "transformers.Trainer"


class OutOfTime(BaseException):
    """The run reached --max-seconds (a BaseException: no library's `except Exception` swallows it)."""


# --- the model, its inputs and its FLOPs ---------------------------------------------------------


def model_config(shape: dict, attention_dropout: float):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(**shape, max_position_embeddings=514, type_vocab_size=1, num_labels=3,
                            attention_probs_dropout_prob=attention_dropout,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2)


def build_model(config, seed: int):
    """The sequence classifier with random weights drawn from `seed`, on the CPU."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    from producers.modeling import quiet_transformers

    quiet_transformers()
    torch.manual_seed(seed)
    return XLMRobertaForSequenceClassification(config)


def token_rows(n: int, seq_len: int, vocab_size: int, seed: int) -> list[list[int]]:
    """`n` sequences `<s> w1 .. w(seq_len-2) </s>` of random ordinary token ids."""
    import numpy as np

    middle = np.random.default_rng(seed).integers(FIRST_ORDINARY_ID, vocab_size, size=(n, seq_len - 2))
    return [[0, *row, 2] for row in middle.tolist()]


def train_features(n: int, seq_len: int, vocab_size: int) -> list[dict]:
    """NLI training features as `NLITask.train_features` makes them: input ids and a class."""
    return [{"input_ids": ids, "labels": i % 3} for i, ids in enumerate(token_rows(n, seq_len, vocab_size, 1))]


def eval_features(n: int, seq_len: int, vocab_size: int) -> list[dict]:
    """NLI evaluation features as `NLITask.eval_features` makes them: input ids and the example's index."""
    return [{"input_ids": ids, "example_index": i} for i, ids in enumerate(token_rows(n, seq_len, vocab_size, 2))]


def non_embedding_parameters(model) -> int:
    """Parameters outside every `nn.Embedding` (word, position and token-type embeddings)."""
    import torch

    embedding = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def training_flops_per_token(n_non_embedding: int, layers: int, hidden: int, seq_len: int) -> int:
    """6 N (forward and backward matrix products) + 12 * layers * hidden * seq_len (attention)."""
    return 6 * n_non_embedding + 12 * layers * hidden * seq_len


# --- the device -----------------------------------------------------------------------------------


def pick(device_option: str):
    import torch

    if device_option == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: --device cuda, but torch sees no CUDA device")
    if device_option == "auto":
        device_option = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device_option)


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else machine()


def peak_bf16_tflops(name: str) -> float | None:
    """The dense bf16 peak of a known GPU; None for any other device (MFU is then left blank)."""
    return next((peak for part, peak in PEAK_BF16_TFLOPS if part.lower() in name.lower()), None)


def result_name(device, name: str, tiny: bool) -> str:
    """gpu-<device-slug>[-tiny]; the CPU's is gpu-script-cpu[-tiny]."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") if device.type == "cuda" else "script-cpu"
    return f"gpu-{slug}" + ("-tiny" if tiny else "")


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_device_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


# --- training ---------------------------------------------------------------------------------------


class FedCounter:
    """A forward hook: the examples and tokens fed to the model, the number of forward passes and
    the last loss (kept as a tensor: reading it would synchronize every step)."""

    def __init__(self, model):
        self.examples = self.tokens = self.forwards = 0
        self.last_loss = None
        self.handle = model.register_forward_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs, output) -> None:
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.examples += input_ids.shape[0]
        self.tokens += input_ids.numel()
        self.forwards += 1
        if getattr(output, "loss", None) is not None:
            self.last_loss = output.loss.detach()

    def final_loss(self) -> float | None:
        self.handle.remove()
        return None if self.last_loss is None else float(self.last_loss.float().item())


class StepClock:
    """Reads the clock (after synchronizing) at the end of the last untimed step and of every step
    from then on that may be the last; stops the loop (`should_stop`) after its deadline."""

    def __init__(self, device, warmup_steps: int, total_steps: int, deadline: float, counter: FedCounter):
        self.device, self.warmup_steps, self.total_steps = device, warmup_steps, total_steps
        self.deadline, self.counter = deadline, counter
        self.start = self.start_examples = self.start_tokens = None
        self.end = None
        self.steps = 0
        self.stopped_early = False

    def step_done(self, step: int) -> None:
        self.steps = step
        if step == self.warmup_steps:
            synchronize(self.device)
            self.start, self.start_examples, self.start_tokens = (time.perf_counter(), self.counter.examples,
                                                                  self.counter.tokens)
        elif step == self.total_steps or (step > self.warmup_steps and self.should_stop()):
            synchronize(self.device)
            self.end = time.perf_counter()

    def should_stop(self) -> bool:
        if self.steps < self.total_steps and time.perf_counter() > self.deadline:
            self.stopped_early = True
        return self.stopped_early

    def summary(self, flops_per_token: int, peak_tflops: float | None) -> dict:
        timed = {}
        if self.start is not None and self.end is not None:
            seconds = self.end - self.start
            examples, tokens = self.counter.examples - self.start_examples, self.counter.tokens - self.start_tokens
            tflops = tokens * flops_per_token / seconds / 1e12
            timed = {"timed_steps": self.steps - self.warmup_steps, "timed_seconds": seconds,
                     "timed_examples": examples, "timed_tokens": tokens,
                     "samples_per_second": examples / seconds, "tokens_per_second": tokens / seconds,
                     "steps_per_second": (self.steps - self.warmup_steps) / seconds, "achieved_tflops": tflops,
                     "mfu": tflops / peak_tflops if peak_tflops else None}
        return {"optimizer_steps": self.steps, "examples": self.counter.examples, "tokens": self.counter.tokens,
                "forward_passes": self.counter.forwards, "stopped_early_by_budget": self.stopped_early, **timed}


class StopTraining(Exception):
    """Raised from the producers' step callback when the loop's time is up."""


def train_producers(initial, features, config, total_steps: int, options, device, flops: dict) -> dict:
    """The producers' loop, as `producers.finetune.fine_tune` drives it (on the device, no snapshots)."""
    from producers.finetune import fit, make_optimizer, make_scheduler

    model = copy.deepcopy(initial).to(device)
    if options.gradient_checkpointing:
        model.activation_checkpointing_enable()  # what Trainer calls for it
    counter = FedCounter(model)
    clock = StepClock(device, options.warmup_steps, total_steps,
                      time.perf_counter() + TRAINING_SHARE * options.max_seconds, counter)

    def on_step(step: int) -> None:
        clock.step_done(step)
        if clock.stopped_early:
            raise StopTraining

    optimizer = make_optimizer(model, config)
    try:
        fit(model, features, config, optimizer, make_scheduler(optimizer, config, total_steps), total_steps,
            pad_token_id=initial.config.pad_token_id, on_step=on_step)
    except StopTraining:
        pass
    result = {**clock.summary(flops["per_token"], flops["peak_tflops"]),
              "final_loss": counter.final_loss(), "peak_memory_gb": peak_memory_gb(device),
              "optimizer": f"torch.optim.AdamW (fused={optimizer.defaults.get('fused')})"}
    del model, optimizer
    free_device_memory(device)
    return result


def train_trainer(initial, features, config, total_steps: int, options, device, flops: dict, work: Path) -> dict:
    """`transformers.Trainer` at the same settings (it moves the model to the device itself)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from producers.batching import collate

    model = copy.deepcopy(initial)
    counter = FedCounter(model)
    clock = StepClock(device, options.warmup_steps, total_steps,
                      time.perf_counter() + TRAINING_SHARE * options.max_seconds, counter)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(state.global_step)
            if clock.stopped_early:
                control.should_training_stop = True

    on_gpu = device.type == "cuda"
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=config.batch_size, max_steps=total_steps,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear", max_grad_norm=config.max_grad_norm,
        optim="adamw_torch_fused" if on_gpu else "adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        bf16=on_gpu, use_cpu=not on_gpu, activation_checkpointing=options.gradient_checkpointing, seed=config.seed,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=features, callbacks=[Clock()],
                      data_collator=lambda rows: collate(rows, range(len(rows)), initial.config.pad_token_id))
    output = trainer.train()
    result = {**clock.summary(flops["per_token"], flops["peak_tflops"]),
              "final_loss": counter.final_loss(), "mean_loss": output.training_loss,
              "peak_memory_gb": peak_memory_gb(device), "optimizer": f"optim={args.optim}"}
    del trainer, model
    free_device_memory(device)
    return result


def training_phase(report: dict, initial, config, options, device, work: Path) -> None:
    """Both loops, the producers' first; a loop stopped early sets the other's number of steps."""
    features = train_features(options.batch_size * options.train_batches, options.seq_len, initial.config.vocab_size)
    flops = report["model"]["flops"]
    total = options.warmup_steps + options.steps
    loops = report["training"] = {"asked_optimizer_steps": total}
    loops[PRODUCERS] = train_producers(initial, features, config, total, options, device, flops)
    total = min(total, loops[PRODUCERS]["optimizer_steps"])
    loops[TRAINER] = train_trainer(initial, features, config, total, options, device, flops, work)
    ours, theirs = loops[PRODUCERS].get("tokens_per_second"), loops[TRAINER].get("tokens_per_second")
    loops["ratio_tokens_per_second"] = ours / theirs if ours and theirs else None


# --- averaging ----------------------------------------------------------------------------------------


def write_inputs(initial, k: int, folder: Path) -> list[Path]:
    """`k` distinct state dicts of the model (the initial weights scaled by 1 + i/100), as the runs
    write their weights (`RunFolder.write_weights`: `save_file` of the CPU state dict)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(k):
        state = {name: (t * (1 + i / 100) if t.is_floating_point() else t).detach().contiguous()
                 for name, t in initial.state_dict().items()}
        paths.append(folder / f"input-{i + 1}.safetensors")
        save_file(state, str(paths[-1]))
        del state
    return paths


def naive_average(inputs: list[Path], output: Path) -> None:
    """The baseline: load every input whole, sum in float32, divide, save."""
    from safetensors.torch import load_file, save_file

    total = None
    for path in inputs:
        state = load_file(str(path))
        total = state if total is None else {name: total[name] + state[name] for name in total}
    save_file({name: t / len(inputs) if t.is_floating_point() else t for name, t in total.items()}, str(output))


def averaging_phase(report: dict, initial, options, work: Path) -> Path:
    """The streaming averager against the baseline; returns the averaged file."""
    from ofa_eval.weights.averaging import average_checkpoints

    inputs = write_inputs(initial, options.average_inputs, work / "inputs")
    output, baseline_output = work / "average.safetensors", work / "naive-average.safetensors"
    reports = []
    seconds = median_seconds(lambda: reports.append(average_checkpoints(inputs, output)), options.repeat)
    bytes_read = reports[-1].bytes_read
    naive_seconds = median_seconds(lambda: naive_average(inputs, baseline_output), 1)
    baseline_output.unlink()
    report["averaging"] = {
        "inputs": len(inputs), "bytes_per_input": inputs[0].stat().st_size, "bytes_read": bytes_read,
        "streaming": {"seconds": seconds, "gb_per_second": bytes_read / seconds / 1e9},
        "baseline": {"name": "safetensors load_file of every input, torch sum / k, save_file",
                     "seconds": naive_seconds, "gb_per_second": bytes_read / naive_seconds / 1e9},
        "speedup": naive_seconds / seconds}
    return output


# --- prediction ---------------------------------------------------------------------------------------


def bare_forward(model, batches: list[dict], device) -> None:
    """The baseline: forward passes over batches already on the device, nothing read back."""
    import torch

    from producers.modeling import autocast

    with torch.inference_mode(), autocast(device):
        for batch in batches:
            model(**batch)
    synchronize(device)


def prediction_phase(report: dict, initial, config, options, device, weights: Path | None, work: Path) -> None:
    """`predict` against bare forward passes; then one materialize step (`Evaluation.predict`)."""
    from producers.batching import collate, eval_batches
    from producers.predict import Evaluation, predict
    from producers.tasks import EvalSet, get_task

    task, pad = get_task("nli"), initial.config.pad_token_id
    features = eval_features(options.predict_examples, options.seq_len, initial.config.vocab_size)
    examples = [{"id": f"bench-{i}"} for i in range(len(features))]
    eval_set = EvalSet("bench", "en", "test", "target", examples)
    model = copy.deepcopy(initial).to(device)

    def run_predict():
        predict(model, task, eval_set, features, config, LABEL_NAMES, device, pad)
        synchronize(device)

    seconds = median_seconds(run_predict, options.repeat)
    lengths = [len(f["input_ids"]) for f in features]
    batches = [{k: v.to(device) for k, v in collate(features, indices, pad).items()}
               for indices in eval_batches(lengths, config.eval_batch_size)]
    synchronize(device)
    bare = median_seconds(lambda: bare_forward(model, batches, device), options.repeat)
    result = report["prediction"] = {
        "examples": len(features), "eval_batch_size": config.eval_batch_size,
        "predict": {"seconds": seconds, "examples_per_second": len(features) / seconds},
        "bare_forward": {"seconds": bare, "examples_per_second": len(features) / bare},
        "ratio_predict_to_bare": bare / seconds}
    if weights is not None:
        evaluation = Evaluation("bench", task, model, device, pad, LABEL_NAMES, [(eval_set, features)])
        out = work / "predictions"
        step = median_seconds(lambda: (evaluation.predict(weights, out, config), synchronize(device)), 1)
        result["materialize_step"] = {"seconds": step, "examples_per_second": len(features) / step,
                                      "tables": sorted(p.name for p in out.iterdir())}
    del model, batches
    free_device_memory(device)


# --- the run ----------------------------------------------------------------------------------------------


def parse_options(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and sizes (a CPU runs it in seconds)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--seq-len", type=int, help="tokens per example (128; tiny 32)")
    parser.add_argument("--batch-size", type=int, help="training batch size (32; tiny 8)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per training loop (100; tiny 6)")
    parser.add_argument("--warmup-steps", type=int, help="untimed optimizer steps before them (10; tiny 2)")
    parser.add_argument("--train-batches", type=int, default=16,
                        help="training examples: this many batches, visited again epoch after epoch")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="both loops; off by default")
    parser.add_argument("--average-inputs", type=int, help="state dicts averaged (4; tiny 3)")
    parser.add_argument("--predict-examples", type=int, help="examples predicted (4096; tiny 96)")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="prediction batch size (RunConfig's)")
    parser.add_argument("--repeat", type=int, help="timed repeats of averaging and prediction, after a warm-up")
    parser.add_argument("--max-seconds", type=float, default=420.0, help="time budget of the whole run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .md and .json go")
    parser.add_argument("--work-dir", type=Path, help="kept scratch folder (weights, predictions); default: a temporary one")
    options = parser.parse_args(argv)
    for key, value in DEFAULTS["tiny" if options.tiny else "large"].items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if not 3 <= options.seq_len <= 512 or options.steps < 1 or options.warmup_steps < 1:
        parser.error("--seq-len must be 3..512 (514 positions), --steps and --warmup-steps at least 1")
    return options


def describe_environment(options, device) -> dict:
    import accelerate
    import torch
    import transformers

    name = device_name(device)
    return {"device": {"type": device.type, "name": name, "peak_bf16_tflops": peak_bf16_tflops(name)
                       if device.type == "cuda" else None},
            "host": machine(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "command": "python benchmarks/bench_gpu.py " + shlex.join(sys.argv[1:]), "mode": "tiny" if options.tiny
            else "large"}


def describe_model(initial, options, peak: float | None) -> dict:
    config = initial.config
    n = non_embedding_parameters(initial)
    per_token = training_flops_per_token(n, config.num_hidden_layers, config.hidden_size, options.seq_len)
    shape = {k: getattr(config, k) for k in LARGE_SHAPE}
    return {"class": type(initial).__name__, "shape": {**shape, "max_position_embeddings": config.max_position_embeddings},
            "seq_len": options.seq_len, "attention": config._attn_implementation,
            "parameters": sum(p.numel() for p in initial.parameters()), "non_embedding_parameters": n,
            "flops": {"formula": "6 * non_embedding_parameters + 12 * layers * hidden * seq_len",
                      "per_token": per_token, "peak_tflops": peak}}


def setup(report: dict, options, device) -> tuple:
    """The initial model (on the CPU) and the run's RunConfig; records the model and the settings."""
    from producers.config import RunConfig

    shape = TINY_SHAPE if options.tiny else LARGE_SHAPE
    # XLM-R's own attention dropout (0.1) on the GPU; none on the CPU, where it takes a much slower path
    initial = build_model(model_config(shape, 0.1 if device.type == "cuda" else 0.0), seed=0)
    report["model"] = describe_model(initial, options, report["environment"]["device"]["peak_bf16_tflops"])
    config = RunConfig(task="nli", model="bench-gpu", model_name_or_path="(random weights)",
                       learning_rate=options.learning_rate, batch_size=options.batch_size, seed=1,
                       max_length=options.seq_len, eval_batch_size=options.eval_batch_size)
    report["settings"] = {
        "batch_size": options.batch_size, "seq_len": options.seq_len, "warmup_steps_untimed": options.warmup_steps,
        "timed_steps": options.steps, "train_examples": options.batch_size * options.train_batches,
        "learning_rate": options.learning_rate, "lr_schedule": f"linear, {config.warmup_ratio:.0%} warm-up",
        "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm,
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "tf32_matmul": device.type == "cuda", "gradient_checkpointing": options.gradient_checkpointing}
    return initial, config


def run_phases(report: dict, options, device, work: Path) -> None:
    """Build the model, then train, average and predict while the budget lasts. A phase that
    fails is recorded and the next one runs; at the time limit the rest are skipped."""
    made = {}
    phases = {
        "setup": lambda: made.update(zip(("initial", "config"), setup(report, options, device))),
        "training": lambda: training_phase(report, made["initial"], made["config"], options, device, work),
        "averaging": lambda: made.update(weights=averaging_phase(report, made["initial"], options, work)),
        "prediction": lambda: prediction_phase(report, made["initial"], made["config"], options, device,
                                               made.get("weights"), work),
    }
    for phase, run in phases.items():
        try:
            run()
        except OutOfTime:
            report["errors"][phase] = f"stopped at --max-seconds {options.max_seconds:g}; later phases skipped"
            return
        except Exception as error:
            report["errors"][phase] = f"{type(error).__name__}: {error}"
            free_device_memory(device)
            if phase == "setup":
                return


@contextlib.contextmanager
def time_limit(seconds: float):
    """OutOfTime raised in the main thread once `seconds` have passed (at the next Python bytecode)."""
    def out_of_time(signum, frame):
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def main(argv=None) -> int:
    options = parse_options(argv)
    import torch

    device = pick(options.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for float32 matrix products outside autocast
    report = {"environment": describe_environment(options, device), "errors": {}}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        work = options.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        with time_limit(options.max_seconds):
            run_phases(report, options, device, work)
    report["elapsed_seconds"] = time.perf_counter() - began
    report["max_seconds"] = options.max_seconds
    name = result_name(device, report["environment"]["device"]["name"], options.tiny)
    write_results(report, options.out_dir, name)
    print(render_markdown(report))
    return 1 if report["errors"] else 0


# --- the results files ----------------------------------------------------------------------------------


def number(value, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def training_rows(training: dict) -> list[str]:
    rows = ["| loop | optimizer steps (timed) | examples fed | tokens/s | samples/s | TFLOP/s | MFU | final loss "
            "| peak GPU memory GB |", "|---|---|---|---|---|---|---|---|---|"]
    for loop in (PRODUCERS, TRAINER):
        r = training.get(loop)
        if r is None:
            continue
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else ""
        rows.append(f"| {loop} | {r['optimizer_steps']} ({r.get('timed_steps', '')}) | {r['examples']:,} "
                    f"| {number(r.get('tokens_per_second'), 0)} | {number(r.get('samples_per_second'))} "
                    f"| {number(r.get('achieved_tflops'), 2)} | {mfu} | {number(r['final_loss'], 4)} "
                    f"| {number(r['peak_memory_gb'], 1)} |")
    return rows


def peak_text(peak: float | None) -> str:
    return f"dense bf16 peak {peak:g} TFLOP/s" if peak else "no known dense bf16 peak: MFU left blank"


def render_markdown(report: dict) -> str:
    env, model, settings = report["environment"], report.get("model", {}), report.get("settings", {})
    lines = [f"# The producers on {env['device']['name']} ({env['mode']} model)", "",
             f"Device: {env['device']['name']} ({peak_text(env['device']['peak_bf16_tflops'])}); host: {env['host']}; "
             f"Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
             f"accelerate {env['accelerate']}.", "", "Command:", "", f"    {env['command']}", ""]
    if env["mode"] == "tiny":
        lines += ["Tiny mode checks that the script runs end to end: a few steps and files of a few MB "
                  "measure start-up costs, not throughput; the ratios below mean nothing.", ""]
    if model:
        lines += [f"Model: {model['class']} from a config with random weights, {model['shape']}, attention "
                  f"`{model['attention']}`; {model['parameters']:,} parameters, {model['non_embedding_parameters']:,} "
                  f"outside the embeddings (N). Training FLOPs per token = {model['flops']['formula']} = "
                  f"{model['flops']['per_token']:,}.", "",
                  f"Settings: {json.dumps(settings)}.", ""]
    training = report.get("training")
    if training:
        ratio = training.get("ratio_tokens_per_second")
        lines += ["## Fine-tuning", "", *training_rows(training), "",
                  f"**Ratio producers / Trainer (tokens/s): {number(ratio, 3) or 'n/a'}** (goal >= 1.0); "
                  f"optimizer steps asked: {training['asked_optimizer_steps']}.", ""]
    averaging = report.get("averaging")
    if averaging:
        lines += ["## Averaging (what materialize calls)", "",
                  f"{averaging['inputs']} inputs of {averaging['bytes_per_input'] / 1e9:.3f} GB, "
                  f"{averaging['bytes_read'] / 1e9:.3f} GB read per average.", "",
                  "| averager | seconds | GB/s read |", "|---|---|---|",
                  f"| `average_checkpoints` (streaming) | {number(averaging['streaming']['seconds'], 3)} "
                  f"| {number(averaging['streaming']['gb_per_second'], 2)} |",
                  f"| baseline: {averaging['baseline']['name']} | {number(averaging['baseline']['seconds'], 3)} "
                  f"| {number(averaging['baseline']['gb_per_second'], 2)} |", "",
                  f"**Speed-up over the baseline: {averaging['speedup']:.2f}x**", ""]
    prediction = report.get("prediction")
    if prediction:
        lines += ["## Prediction", "", f"{prediction['examples']} examples, batch size {prediction['eval_batch_size']}.",
                  "", "| path | seconds | examples/s |", "|---|---|---|",
                  f"| `producers.predict.predict` | {number(prediction['predict']['seconds'], 3)} "
                  f"| {number(prediction['predict']['examples_per_second'])} |",
                  f"| baseline: bare forward passes, batches on the device | "
                  f"{number(prediction['bare_forward']['seconds'], 3)} "
                  f"| {number(prediction['bare_forward']['examples_per_second'])} |"]
        step = prediction.get("materialize_step")
        if step:
            lines.append(f"| materialize step (`Evaluation.predict`: load the average, predict, write) "
                         f"| {number(step['seconds'], 3)} | {number(step['examples_per_second'])} |")
        lines += ["", f"**predict / bare forward (throughput): {prediction['ratio_predict_to_bare']:.2f}**", ""]
    lines += [f"Elapsed: {report['elapsed_seconds']:.1f} s of a {report['max_seconds']:g} s budget."]
    if report["errors"]:
        lines += ["", "Errors:", *[f"- {phase}: {message}" for phase, message in report["errors"].items()]]
    return "\n".join(lines) + "\n"


def write_results(report: dict, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(render_markdown(report))


if __name__ == "__main__":
    sys.exit(main())
