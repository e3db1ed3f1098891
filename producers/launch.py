"""Launching a grid: one run after another in this process, or one SLURM job per run (submitit).

Each run writes only its own folder `<runs>/<run-name>/`; the aligned task head of each
(task, model) is made once, before the runs, under `<runs>/_heads/`. Complete runs are skipped
and interrupted ones resume, so launching the same grid again finishes what is missing.

On SLURM the head is one job and the runs are one job array (`executor.batch()`) that starts
only after the head job succeeded (`--dependency=afterok`). Submitted job ids are recorded in
`<runs>/_slurm/jobs.json` (`ofa_eval.jobs.slurm`): a second call submits only what is neither
finished nor queued or running. Jobs stop at once on SIGTERM and are requeued on the time
limit's warning signal (`ofa_eval.jobs.slurm.Resumable`); a run resumes from its last snapshot.
Other submitit executors (the local one, used in tests) have no dependencies: there the head
job is awaited before the array is submitted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ofa_eval.common.errors import OfaError
from producers.artifacts import read_manifest_if_any
from producers.batching import steps_per_epoch
from producers.heads import head_folder, prepare_head, read_head


def pending(experiment, runs_dir) -> list:
    """The experiment's runs that are not complete yet."""
    return [c for c in experiment.runs()
            if (read_manifest_if_any(Path(runs_dir) / c.name) or {}).get("state") != "complete"]


def train_local(experiments, runs_dir, progress: bool = True) -> list[Path]:
    """Train every run of every experiment here, one after another."""
    from producers.train import status_printer, train_run

    runs_dir, folders = Path(runs_dir), []
    for experiment in experiments:
        todo = pending(experiment, runs_dir)
        if not todo:
            folders += [runs_dir / c.name for c in experiment.runs()]
            continue
        status_printer(experiment.task, progress)(f"reading the data for {len(todo)} run(s)")
        data = experiment.load_data()
        head = make_head(experiment, runs_dir, data, progress)
        for config in experiment.runs():
            folders.append(train_run(config, data, runs_dir / config.name, head, progress=progress))
    return folders


def make_head(experiment, runs_dir, data=None, progress: bool = False):
    """The experiment's aligned head (made by its initial fine-tune when missing)."""
    config = experiment.head_config()
    data = data if data is not None else experiment.load_data()
    return prepare_head(experiment.head_mode, config, data, head_folder(runs_dir, config), progress)


def run_job(experiment, config, runs_dir) -> str:
    """One grid run as a batch job: load the data, read the aligned head, train."""
    from producers.train import train_run

    folder = head_folder(runs_dir, experiment.head_config())
    head = read_head(folder) if experiment.head_mode != "none" else None
    if experiment.head_mode != "none" and head is None:
        raise RuntimeError(f"{folder}: the aligned head is missing (did the head job fail?)")
    return str(train_run(config, experiment.load_data(), Path(runs_dir) / config.name, head, progress=False))


def head_job(experiment, runs_dir) -> str:
    make_head(experiment, runs_dir)
    return str(head_folder(runs_dir, experiment.head_config()))


def make_executor(folder, cluster: str | None = None, partition: str | None = None, timeout_min: int | None = None,
                  gpus_per_node: int | None = None, cpus_per_task: int | None = None, mem_gb: int | None = None,
                  array_parallelism: int = 64, **slurm):
    """A submitit executor; `cluster=None` picks SLURM where `sbatch` exists.

    On SLURM, unset requests are filled from the partition and impossible ones are refused
    before anything is submitted (`ofa_eval.jobs.slurm.fit_request`).
    """
    import submitit

    from ofa_eval.jobs.slurm import DEFAULT_TIMEOUT_MIN, fit_request, require_slurm

    if cluster == "slurm":
        require_slurm()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    parameters = {"timeout_min": timeout_min or DEFAULT_TIMEOUT_MIN, "slurm_array_parallelism": array_parallelism}
    if executor.cluster == "slurm":
        request = fit_request(partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min)
        print(f"SLURM jobs: {request.describe()}", file=sys.stderr)
        parameters.update(timeout_min=request.timeout_min, cpus_per_task=request.cpus, mem_gb=request.mem_gb,
                          slurm_partition=request.partition, **{f"slurm_{k}": v for k, v in slurm.items()})
        if request.gpus:
            parameters["gpus_per_node"] = request.gpus
    executor.update_parameters(**parameters)
    return executor


def check_grid(experiments, runs_dir) -> None:
    """Refuse, before anything is queued, a grid whose runs cannot train: missing data or model
    files, or fewer optimizer steps than snapshots."""
    for experiment in experiments:
        if not pending(experiment, runs_dir):
            continue
        where = f"{experiment.base_dir} [{experiment.task}]"
        model = experiment.settings["model_name_or_path"]
        if model.startswith("/") and not Path(model).is_dir():
            raise OfaError(f"{where}: model_name_or_path {model} is not a folder")
        try:
            data = experiment.load_data()
        except OfaError as error:
            raise OfaError(f"{where}: {error}") from None
        for config in pending(experiment, runs_dir):
            steps = config.epochs * steps_per_epoch(_training_features(experiment, config, data), config.batch_size)
            if steps < config.snapshots:
                raise OfaError(f"{where}: run {config.name} would take {steps} optimizer step(s) "
                               f"({config.epochs} epoch(s) at batch size {config.batch_size}), too few for "
                               f"{config.snapshots} snapshots; use more data or epochs, or smaller batches")


def _training_features(experiment, config, data) -> int:
    """How many training features a run sees: one per example, more for QA's long contexts
    (counted with the tokenizer only when the examples alone are too few)."""
    examples = len(data.train)
    if experiment.task != "qa" or config.epochs * steps_per_epoch(examples, config.batch_size) >= config.snapshots:
        return examples
    from producers.modeling import load_tokenizer
    from producers.tasks import get_task

    tokenizer = load_tokenizer(config.model_name_or_path)
    return len(get_task("qa").train_features(data.train, tokenizer, config, data.label_names))


def submit(experiments, runs_dir, executor) -> list:
    """Submit the grid's missing work: per experiment, a head job when its head is missing, then
    one array of its pending runs. Returns the jobs submitted now (on SLURM: `ofa_eval.jobs.slurm.Job`
    records, see `submit_to_slurm`; otherwise submitit's jobs, the head job awaited here)."""
    if getattr(executor, "cluster", None) == "slurm":
        return submit_to_slurm(experiments, runs_dir, executor).submitted
    jobs = []
    for experiment in experiments:
        todo = pending(experiment, runs_dir)
        if not todo:
            continue
        if experiment.head_mode != "none" and read_head(head_folder(runs_dir, experiment.head_config())) is None:
            executor.update_parameters(name=f"{experiment.task}-head")
            jobs.append(executor.submit(head_job, experiment, str(runs_dir)))
            jobs[-1].result()
        executor.update_parameters(name=f"{experiment.task}-grid")
        with executor.batch():
            jobs += [executor.submit(run_job, experiment, config, str(runs_dir)) for config in todo]
    return jobs


@dataclass
class Submission:
    """What a SLURM submission did: jobs submitted now, and jobs an earlier call left queued."""

    submitted: list = field(default_factory=list)
    queued: list = field(default_factory=list)

    @property
    def jobs(self) -> list:
        return self.submitted + self.queued


def submit_to_slurm(experiments, runs_dir, executor) -> Submission:
    """Submit only what is neither finished on disk nor queued or running, recording the job ids
    in `<executor folder>/jobs.json`; queued runs that wait for a head job that is gone are
    cancelled and submitted again after the new head job."""
    from ofa_eval.jobs.slurm import Record, queue_states

    runs_dir, submission = Path(runs_dir), Submission()
    record = Record(executor.folder)
    with record.locked():
        jobs = record.load()
        states = queue_states(job.job_id for job in jobs.values())
        for experiment in experiments:
            _submit_experiment(experiment, runs_dir, executor, jobs, states, submission)
        record.save(jobs)
    return submission


def _submit_experiment(experiment, runs_dir: Path, executor, jobs: dict, states: dict, submission: Submission):
    from ofa_eval.jobs.slurm import cancel, cancel_stuck, still_queued, submit_array

    todo = pending(experiment, runs_dir)
    if not todo:
        return
    is_done = done_check(runs_dir)
    head = None
    name = head_name(experiment)
    if experiment.head_mode != "none" and not is_done(name):
        head = still_queued(jobs, [name], is_done, states).get(name)
        if head is None:
            cancel_stuck(jobs, [name], states)
            [head] = submit_array(executor, f"{experiment.task}-head", [(name, head_job, (experiment, str(runs_dir)))])
            jobs[name] = head
            submission.submitted.append(head)
        else:
            submission.queued.append(head)
    after = head.job_id if head else None
    names = [config.name for config in todo]
    queued = still_queued(jobs, names, is_done, states)
    stale = [job for job in queued.values() if head is not None and job.after != after]
    for job in stale:
        print(f"cancelled {job.describe()}: it waits for head job {job.after}, which is gone", file=sys.stderr)
        del queued[job.name]
    cancel(job.job_id for job in stale)
    cancel_stuck(jobs, [n for n in names if n not in queued], states)
    calls = [(c.name, run_job, (experiment, c, str(runs_dir))) for c in todo if c.name not in queued]
    new = submit_array(executor, f"{experiment.task}-grid", calls, after)
    jobs.update((job.name, job) for job in new)
    submission.submitted += new
    submission.queued += queued.values()


def head_name(experiment) -> str:
    """The head's name in the job record: its folder, relative to the runs folder."""
    return head_folder("", experiment.head_config()).as_posix()


def done_check(runs_dir):
    """name -> whether it is finished on disk: a run folder whose manifest says complete, or a head."""
    runs_dir = Path(runs_dir)

    def is_done(name: str) -> bool:
        if name.startswith("_heads/"):
            return read_head(runs_dir / name) is not None
        return (read_manifest_if_any(runs_dir / name) or {}).get("state") == "complete"

    return is_done
