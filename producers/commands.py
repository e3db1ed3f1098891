"""The `train` command: train a grid file's runs into a runs folder, here or on SLURM; and
`build-model`: a small model and tokenizer for one's own languages (`producers.pretrain`).

Registered in the `ofa-eval` CLI by `ofa_eval.cli`; torch and transformers are imported only
when the command runs.
"""

from __future__ import annotations

import click

from ofa_eval.commands.extras import require_training_extra
from producers.pretrain import QUICKSTART_PRETRAIN_STEPS


class TaskChoice(click.Choice):
    """The names of the tasks that can be trained (`producers.tasks.task_names`), looked up when
    the option is first shown or checked, so that task plug-ins load only then."""

    def __init__(self):
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        from producers.tasks import task_names

        return tuple(task_names())


def slurm_options(function):
    """The SLURM job options shared by `train` and `materialize` (used with --launcher slurm)."""
    options = [
        click.option("--slurm-partition", help="SLURM partition (default: the cluster's default partition)."),
        click.option("--slurm-timeout", "timeout_min", type=int,
                     help="Time limit per job in minutes (default: 24 hours, or the partition's limit if shorter)."),
        click.option("--slurm-gpus", "gpus_per_node", type=int,
                     help="GPUs per job (default: 1 where the partition has GPUs, else 0)."),
        click.option("--slurm-cpus", "cpus_per_task", type=int,
                     help="CPUs per job (default: 8, or a node's CPUs if fewer)."),
        click.option("--slurm-mem-gb", "mem_gb", type=int,
                     help="Memory per job in GB (default: 64, or a node's share for those CPUs if less)."),
        click.option("--slurm-parallel", "array_parallelism", type=int, default=64, show_default=True,
                     help="How many jobs of the array may run at once."),
        click.option("--wait/--no-wait", "wait", default=None,
                     help="Wait for the jobs and report (default: train returns after submitting, "
                          "materialize waits). A later call collects what finished."),
        click.option("--wait-timeout", "wait_timeout", type=click.FloatRange(min=0),
                     help="Stop waiting after this many minutes (default: while jobs are queued or running)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command("train")
@click.argument("grid_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs folder: one subfolder per run, aligned heads under _heads/.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: one run after another in this process; slurm: one submitit job array, one task per run.")
@click.option("--task", "tasks", multiple=True, type=TaskChoice(),
              help="Train only these tasks of the grid (default: every task table).")
@slurm_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--restart-changed", is_flag=True,
              help="Start over (delete and retrain) the interrupted runs whose grid settings, data or base model "
                   "changed since they started; without it, such runs are refused.")
def train(grid_file, out, launcher, tasks, slurm_partition, timeout_min, gpus_per_node, cpus_per_task, mem_gb,
          array_parallelism, wait, wait_timeout, quiet, restart_changed):
    """Train every run of GRID_FILE (a TOML grid, see docs/producers.md) into --out.

    Each run writes only its own folder (docs/artifacts.md); finished runs are skipped and
    interrupted runs resume from their last snapshot, so running the command again completes a
    grid. Then load the runs with `ofa-eval ingest OUT`. A run resumes only under the recipe it
    started with (every grid setting, the data, the base model): if the grid changed since, train
    names the differences and stops, and --restart-changed starts such runs over.

    With --launcher slurm the grid is checked first (data, steps per snapshot, what the
    partition can hold); then only runs that are neither complete nor already queued or running
    are submitted (job ids in OUT/_slurm/jobs.json). --wait waits and reports failed jobs.

    \b
      ofa-eval train producers/grids/paper.toml --out runs/ --task nli
      ofa-eval train grid.toml --out runs/ --launcher slurm --slurm-partition gpu --wait
    """
    from pathlib import Path

    from producers.grid import load_grid
    from producers.launch import train_local
    from producers.train import restart_changed_runs

    require_training_extra()
    experiments = load_grid(grid_file, tasks=tuple(tasks) or None)
    runs = Path(out)
    if restart_changed:
        _refuse_restarting_queued_runs(experiments, runs)
    restart_changed_runs(experiments, runs, restart_changed, say=lambda line: click.echo(line, err=True))
    if launcher == "local":
        folders = train_local(experiments, runs, progress=not quiet)
        click.echo(f"{len(folders)} run(s) complete in {runs}")
        return
    _train_on_slurm(experiments, runs, dict(partition=slurm_partition, timeout_min=timeout_min,
                                            gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, mem_gb=mem_gb,
                                            array_parallelism=array_parallelism), wait, wait_timeout, quiet)


def _refuse_restarting_queued_runs(experiments, runs) -> None:
    """--restart-changed must not clear a run folder that a queued or running SLURM job uses."""
    import shutil

    from ofa_eval.common.errors import OfaError
    from ofa_eval.jobs.slurm import Record, still_queued
    from producers.train import changed_runs

    record = Record(runs / "_slurm").load()
    if not record or shutil.which("squeue") is None:
        return  # no job was ever submitted here, or no SLURM to ask: before the costly recipe comparison
    names = [run_dir.name for run_dir, _ in changed_runs(experiments, runs) if run_dir.name in record]
    if not names:
        return
    live = still_queued(record, names, is_done=lambda name: False)
    if live:
        job = next(iter(live.values()))
        raise OfaError(f"{runs / job.name}: SLURM job {job.job_id} still trains this run; cancel it "
                       f"(scancel {job.job_id}) or let it end before --restart-changed"
                       + (f" ({len(live) - 1} more such run(s))" if len(live) > 1 else ""))


def _train_on_slurm(experiments, runs, requests: dict, wait, wait_timeout, quiet) -> None:
    from ofa_eval.jobs.slurm import Unfinished, resume_hint, wait_for
    from producers.launch import check_grid, done_check, make_executor, submit_to_slurm

    check_grid(experiments, runs)
    executor = make_executor(runs / "_slurm", "slurm", **requests)
    submission = submit_to_slurm(experiments, runs, executor)
    click.echo(f"submitted {len(submission.submitted)} job(s)"
               + (f": {' '.join(job.job_id for job in submission.submitted)}" if submission.submitted else ""))
    if submission.queued:
        click.echo(f"already queued or running, not submitted again: {len(submission.queued)} job(s): "
                   + " ".join(job.job_id for job in submission.queued))
    if not submission.jobs:
        click.echo(f"every run is complete in {runs}; next: ofa-eval ingest {runs}")
        return
    if not wait:
        click.echo(f"logs: {runs / '_slurm'}; wait for them with --wait, then: ofa-eval ingest {runs}")
        return
    outcome = wait_for(submission.jobs, done_check(runs), "waiting for runs", wait_timeout, progress=not quiet,
                       unit="run")
    if outcome.failed or outcome.waiting:
        finished = [runs / job.name for job in outcome.finished]
        raise Unfinished(runs / "_slurm", outcome, finished, resume_hint())
    click.echo(f"{len(outcome.finished)} job(s) finished; next: ofa-eval ingest {runs}")


@click.command("adopt")
@click.argument("trainer_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--task", required=True, type=TaskChoice(), help="The task the run was trained for.")
@click.option("--data", "data_spec", required=True,
              help="The evaluation data: a grid file (its data table for --task) or a TOML table such as "
                   "'{ directory = \"data/nli\", dataset = \"my-nli\" }' (paths relative to here).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="The run folder to write, e.g. runs/NAME (NAME becomes the run's name).")
@click.option("--model", help="Short model name of the pool the run joins (default: the grid file's `model`).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True),
              help="The run's learning rate (default: from training_args.json).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="The run's effective batch size (default: from trainer_state.json and training_args.json).")
@click.option("--seed", type=int, help="The run's seed (default: from training_args.json).")
@click.option("--max-length", type=click.IntRange(min=1),
              help="Tokens per evaluation example (default: the grid file's, else 128).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False),
              help="The tokenizer's folder (default: the last checkpoint's, else TRAINER_DIR's).")
@click.option("--quiet", "-q", is_flag=True, help="No line per checkpoint.")
def adopt(trainer_dir, task, data_spec, out, model, learning_rate, batch_size, seed, max_length, tokenizer, quiet):
    """Turn a Hugging Face Trainer output folder (TRAINER_DIR) into a run folder (--out).

    Every checkpoint-<step>/ folder (safetensors weights and config.json) becomes a snapshot:
    it predicts every evaluation set of --data, and the checkpoints' average is the run's CA.
    Nothing pickled is read (training_args.bin included): the learning rate, batch size and
    seed come from the options, else from a training_args.json (TrainingArguments.to_json_string())
    or trainer_state.json. Then load the run with `ofa-eval ingest`. See docs/artifacts.md.

    \b
      ofa-eval adopt out/checkpoints --task nli --data grid.toml --out runs/nli-mine-lr2e-05-bs32-seed1
      ofa-eval adopt out/ --task ner --data '{ directory = "data/ner" }' --model xlmr --learning-rate 2e-5 \\
          --batch-size 32 --seed 1 --out runs/ner-xlmr-1
    """
    from producers.adopt import adopt as adopt_run

    require_training_extra()
    run = adopt_run(trainer_dir, task, data_spec, out, model=model, learning_rate=learning_rate,
                    batch_size=batch_size, seed=seed, max_length=max_length, tokenizer=tokenizer,
                    progress=None if quiet else click.echo)
    click.echo(f"{run}: complete; next: ofa-eval ingest {run}")


@click.command("build-model")
@click.argument("texts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="The model folder to write (tokenizer, config, safetensors weights, build.json).")
@click.option("--vocab-size", type=click.IntRange(min=10), default=400, show_default=True,
              help="Size of the BPE vocabulary, special tokens included.")
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True, help="Transformer layers.")
@click.option("--hidden", type=click.IntRange(min=1), default=64, show_default=True,
              help="Hidden size (the feed-forward layer is twice as wide).")
@click.option("--heads", type=click.IntRange(min=1), help="Attention heads (default: hidden size / 32, at least 1).")
@click.option("--pretrain-steps", type=click.IntRange(min=0), default=QUICKSTART_PRETRAIN_STEPS, show_default=True,
              help="Masked-language-modelling steps of 32 texts (0: leave the weights random).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights, batches and masks.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads (more help only a wider model than the default).")
@click.option("--rebuild", is_flag=True, help="Replace a model that --out holds from other texts or settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def build_model(texts, out, vocab_size, layers, hidden, heads, pretrain_steps, seed, threads, rebuild, quiet):
    """Build a small XLM-R-shaped model and tokenizer for your languages from TEXTS.

    TEXTS are files of unlabeled text in every language the model should know: plain text
    (one sentence or paragraph per line; .txt and any other extension), JSON Lines (.jsonl,
    .json: the fields text, premise, hypothesis, question, context and tokens) or CoNLL
    (.conll, .iob, .bio, and a .txt whose every line is a token and an NER tag, as
    MasakhaNER's: one text per sentence). A BPE tokenizer is trained on them, a model
    is initialised from --seed and pretrained on them by masked language modelling, and both
    are saved to --out, which a grid names as model_name_or_path (docs/producers.md). The
    same texts and settings again reuse the folder; other ones are refused unless --rebuild.

    \b
      ofa-eval build-model corpus/en.txt corpus/sw.txt --out models/tiny-en-sw
      ofa-eval build-model corpus/*.txt --out models/small --vocab-size 8000 --layers 4 --hidden 256
    """
    import json
    from pathlib import Path

    from producers.modeling import BUILD_RECORD, model_shape
    from producers.pretrain import build_model_from_files

    require_training_extra()
    record_path = Path(out) / BUILD_RECORD
    before = record_path.read_text() if record_path.is_file() else None
    build_model_from_files(out, texts, vocab_size=vocab_size, shape=model_shape(layers, hidden, heads),
                           pretrain_steps=pretrain_steps, seed=seed, rebuild=rebuild, threads=threads,
                           progress=not quiet)
    after = record_path.read_text()
    record = json.loads(after)
    loss = record["pretraining_loss"]
    trained = (f"masked-LM loss {loss['first_steps']:.2f} -> {loss['last_steps']:.2f} over {pretrain_steps} steps"
               if loss else "weights left random")
    state = "reused (same texts and settings)" if before == after else "built"
    click.echo(f"{out}: {state}: {record['texts']} texts, {trained}")


COMMANDS = [train, adopt, build_model]
