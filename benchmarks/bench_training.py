"""Training throughput of the producers' loop against `transformers.Trainer`, at identical settings.

Both train the same small XLM-R-shaped model (built from an `XLMRobertaConfig`, same initial
weights) on the same tokenized synthetic NLI features, with the same batch size, number of
steps, AdamW (weight decay 0.01 on matrices only), 10% linear warm-up then decay, and gradient
clipping at 1.0, on the CPU, without evaluation, logging or checkpoints. The measured quantity
is optimizer steps per second (and examples per second) over the timed steps, after warm-up
steps; the two trainers alternate `--repeat` times and the median is reported.

`transformers.Trainer` needs `accelerate`, which the `train` extra installs:

    .venv/bin/python benchmarks/bench_training.py --steps 150 --repeat 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"
SHAPE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}


def setup(work: Path, n_examples: int):
    """Tokenizer, initial model and training features (synthetic NLI, English)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from producers import modeling, synthetic
    from producers.config import RunConfig
    from producers.tasks import get_task

    synthetic.write_corpus(work / "data", sizes={"train": n_examples, "validation": 10, "test": 10})
    modeling.build_tiny_model(work / "model", synthetic.corpus_texts(work / "data"), **SHAPE)
    tokenizer = modeling.load_tokenizer(work / "model")
    task = get_task("nli")
    examples = [task.from_record(r) for r in synthetic.generate("nli", "en", "train", n_examples)]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(work / "model", num_labels=3)
    return tokenizer, model, examples, task


def producer_steps_per_second(model, features, config, steps: int, warmup: int, pad_id: int) -> float:
    from producers.finetune import fit, make_optimizer, make_scheduler

    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps + warmup)
    marks = {}
    fit(model, features, config, optimizer, scheduler, steps + warmup, pad_token_id=pad_id,
        on_step=lambda step: marks.__setitem__(step, time.perf_counter()))
    return steps / (marks[steps + warmup] - marks[warmup])


def trainer_steps_per_second(model, features, config, steps: int, warmup: int, pad_id: int, out: str) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from producers.batching import collate

    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks[state.global_step] = time.perf_counter()

    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=config.batch_size, max_steps=steps + warmup,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear", max_grad_norm=config.max_grad_norm, optim="adamw_torch",
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, seed=config.seed, use_cpu=True,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=features,
                      data_collator=lambda rows: collate(rows, range(len(rows)), pad_id), callbacks=[Clock()])
    trainer.train()
    return steps / (marks[steps + warmup] - marks[warmup])


def machine() -> str:
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")), name)
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    options = parser.parse_args()

    import torch
    import transformers

    from producers.config import RunConfig

    torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory() as work:
        tokenizer, initial, examples, task = setup(Path(work), options.examples)
        config = RunConfig(task="nli", model="bench", model_name_or_path=work, learning_rate=2e-5,
                           batch_size=options.batch_size, seed=1, max_length=128)
        features = task.train_features(examples, tokenizer, config, task.label_names(examples))
        rates = {"producers": [], "transformers.Trainer": []}
        for _ in range(options.repeat):
            rates["producers"].append(producer_steps_per_second(
                copy.deepcopy(initial), features, config, options.steps, options.warmup, tokenizer.pad_token_id))
            rates["transformers.Trainer"].append(trainer_steps_per_second(
                copy.deepcopy(initial), features, config, options.steps, options.warmup, tokenizer.pad_token_id,
                str(Path(work) / "trainer")))
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = median["producers"] / median["transformers.Trainer"]
    n_parameters = sum(p.numel() for p in initial.parameters())
    mean_tokens = sum(len(f["input_ids"]) for f in features) / len(features)
    report = {"machine": machine(),
              "python": platform.python_version(), "torch": torch.__version__,
              "transformers": transformers.__version__, "threads": options.threads,
              "parameters": n_parameters, "shape": SHAPE, "batch_size": options.batch_size,
              "mean_tokens": round(mean_tokens, 1), "steps": options.steps, "warmup": options.warmup,
              "repeat": options.repeat, "steps_per_second": rates, "median": median, "ratio": ratio,
              "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:])}
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training-cpu.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
