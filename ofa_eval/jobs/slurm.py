"""Batch jobs on SLURM: what was submitted, what is still queued, waiting with bounds, and reports.

`ofa-eval train` submits one array task per run folder, `ofa-eval materialize` one array task
per group of averaged-model folders, through submitit. This module keeps the bookkeeping both
share:

- a record of the submitted jobs, `jobs.json` in the executor's log folder (`<runs>/_slurm/`,
  `<averages>/_slurm/`): per name (what is made), the job id, its log and the job it waits for. A call submits
  only what is neither finished on disk nor queued or running (`squeue`), under a file lock, so
  a re-run or a second call does not submit anything twice;
- waiting that always ends: the truth is the output on disk and `squeue --states=all`, never
  submitit's result files or accounting, so a job that failed or was cancelled (also while
  pending, when SLURM keeps no trace of it) is reported (name, state, log) at the next poll,
  and one that left the queue after running without its output `GRACE_S` later; `sacct`,
  where accounting exists, only adds the exit code to the report;
- jobs that can never start (a dependency that failed, a request the partition cannot hold) are
  cancelled and reported as failed;
- `Resumable`: a job function that stops at once on SIGTERM (`scancel`, preemption) and, on
  the time limit's warning signal, is requeued by submitit; the work resumes from what it left
  on disk.

Nothing here imports torch; submitit is imported only when a job is submitted.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ofa_eval.common.errors import OfaError

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
          "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
# pending reasons that SLURM never clears by itself
NEVER_STARTS = {"DependencyNeverSatisfied", "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit",
                "BadConstraints", "InvalidAccount", "InvalidQOS"}
GRACE_S = 30  # how long a job that left the queue gets for its output to show on a shared file system
RECORD = "jobs.json"


@dataclass(frozen=True)
class Job:
    """One submitted job: what it makes (`name`), its SLURM id ("123" or "123_4"), its log."""

    name: str
    job_id: str
    log: str
    after: str | None = None  # the job it waits for (--dependency=afterok)

    def describe(self) -> str:
        return f"{self.name} (job {self.job_id})"


@dataclass
class Outcome:
    """Where a set of jobs stands after waiting: finished, failed (with why), still waiting."""

    finished: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    waiting: list[Job] = field(default_factory=list)
    timed_out: bool = False


class Unfinished(OfaError):
    """Some jobs did not produce their output: they failed, or are still queued or running.

    `finished` are the outputs that are complete (callers ingest them before reporting);
    `failed` is true when a job failed or the wait timed out (the command then exits non-zero).
    """

    def __init__(self, where, outcome: Outcome, finished: list[Path], resume: str):
        self.finished, self.outcome = finished, outcome
        self.failed = bool(outcome.failed) or outcome.timed_out
        parts = [f"{len(finished)} of {len(finished) + len(outcome.failed) + len(outcome.waiting)} finished"]
        if outcome.failed:
            names = ", ".join(job.name for job, _ in outcome.failed)
            parts.append(f"{len(outcome.failed)} did not finish: {names}")
        if outcome.waiting:
            ids = " ".join(dict.fromkeys(job.job_id for job in outcome.waiting))  # a job may make several
            parts.append(f"{len(outcome.waiting)} still queued or running (job(s) {ids})"
                         + (", no longer awaited (--wait-timeout)" if outcome.timed_out else ""))
        super().__init__(f"{where}: " + "; ".join(parts + [resume]))


# --- the record of submitted jobs --------------------------------------------------------------


class Record:
    """`jobs.json` in a job folder: the latest job submitted for each name."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / RECORD

    def load(self) -> dict[str, Job]:
        if not self.path.is_file():
            return {}
        try:
            return {name: Job(name=name, **entry) for name, entry in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise OfaError(f"{self.path}: not a readable job record ({error}); delete it to start afresh") from None

    def save(self, jobs: dict[str, Job]) -> None:
        entries = {name: {k: v for k, v in asdict(job).items() if k != "name"} for name, job in sorted(jobs.items())}
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(entries, indent=1))
        os.replace(temporary, self.path)

    @contextmanager
    def locked(self):
        """Hold the folder's lock: one submitting call at a time."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "jobs.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- asking SLURM ------------------------------------------------------------------------------


def slurm(*command: str, timeout_s: int = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OfaError(f"{command[0]}: {error}") from None


def require_slurm() -> None:
    """Refuse in one line where SLURM's commands are missing."""
    missing = [name for name in ("sbatch", "squeue", "sinfo", "scancel") if shutil.which(name) is None]
    if missing:
        raise OfaError(f"--launcher slurm: {', '.join(missing)} not found on PATH (not a SLURM submit host?)")


def queue_states(job_ids) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of the jobs squeue knows, ended ones included (for MinJobAge)."""
    bases = sorted({str(job_id).split("_")[0] for job_id in job_ids})
    if not bases:
        return {}
    done = slurm("squeue", "--array", "--states=all", "--noheader", "--format=%i|%T|%r", f"--jobs={','.join(bases)}")
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # every one of them has left the queue
            return {}
        raise OfaError(f"squeue: {done.stderr.strip() or f'exit status {done.returncode}'}")
    states = {}
    for line in done.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def accounting(job_ids) -> dict[str, str]:
    """{job id: "STATE, exit code X:Y"} from sacct; empty where the cluster keeps no accounting."""
    ids = sorted({str(job_id) for job_id in job_ids})
    if not ids:
        return {}
    try:
        done = slurm("sacct", "--noheader", "--parsable2", "--format=JobID,State,ExitCode", f"--jobs={','.join(ids)}")
    except OfaError:
        return {}
    if done.returncode != 0:
        return {}
    rows = (line.split("|") for line in done.stdout.splitlines() if line.count("|") == 2)
    return {job_id: f"{state}, exit code {code}" for job_id, state, code in rows if "." not in job_id}


def cancel(job_ids) -> None:
    ids = sorted({str(job_id) for job_id in job_ids})
    if ids:
        slurm("scancel", *ids)


def is_stuck(state_reason: tuple[str, str] | None) -> bool:
    return state_reason is not None and state_reason[0] == "PENDING" and state_reason[1] in NEVER_STARTS


def still_queued(record: dict[str, Job], names, is_done: Callable[[str], bool], states=None) -> dict[str, Job]:
    """The recorded jobs of `names` that are not done and are queued or running (and can start)."""
    jobs = [record[name] for name in names if name in record and not is_done(name)]
    states = states if states is not None else queue_states(job.job_id for job in jobs)
    return {job.name: job for job in jobs
            if states.get(job.job_id, ("", ""))[0] in ACTIVE and not is_stuck(states.get(job.job_id))}


def cancel_stuck(record: dict[str, Job], names, states) -> list[Job]:
    """Cancel the recorded jobs of `names` that can never start; returns them."""
    stuck = [record[name] for name in names if name in record and is_stuck(states.get(record[name].job_id))]
    for job in stuck:
        print(f"cancelled {job.describe()}: it can never start ({states[job.job_id][1]})", file=sys.stderr)
    cancel(job.job_id for job in stuck)
    return stuck


# --- what a partition can hold ----------------------------------------------------------------

DEFAULT_GPUS, DEFAULT_CPUS, DEFAULT_MEM_GB, DEFAULT_TIMEOUT_MIN = 1, 8, 64, 24 * 60


@dataclass(frozen=True)
class Node:
    cpus: int
    mem_gb: int
    gpus: int


@dataclass(frozen=True)
class Request:
    """What each job asks SLURM for."""

    partition: str
    gpus: int
    cpus: int
    mem_gb: int
    timeout_min: int

    def describe(self) -> str:
        return (f"partition {self.partition}: {self.gpus} GPU(s), {self.cpus} CPU(s), {self.mem_gb} GB, "
                f"{self.timeout_min} min per job")


def partition_nodes(partition: str | None) -> tuple[str, list[Node], int | None]:
    """(partition name, its nodes, its time limit in minutes or None) from sinfo."""
    done = slurm("sinfo", "--noheader", "--Node", "--format=%P|%c|%m|%G|%l",
                 *([f"--partition={partition}"] if partition else []))
    if done.returncode != 0:
        raise OfaError(f"sinfo: {done.stderr.strip() or f'exit status {done.returncode}'}")
    rows = [line.split("|") for line in done.stdout.splitlines() if line.count("|") == 4]
    if partition is None:
        rows = [row for row in rows if row[0].endswith("*")]
    if not rows:
        which = f"partition {partition}" if partition else "a default partition"
        raise OfaError(f"sinfo: the cluster has no {which} (name one with --slurm-partition)")
    name = rows[0][0].rstrip("*")
    nodes = [Node(_int(cpus), _int(mem) // 1024, _gpus(gres)) for _, cpus, mem, gres, _ in rows]
    return name, nodes, _minutes(rows[0][4])


def fit_request(partition: str | None, gpus: int | None, cpus: int | None, mem_gb: int | None,
                timeout_min: int | None) -> Request:
    """Fill unset requests from the partition (a GPU where it has GPUs, else none; up to 8 CPUs
    and 64 GB) and refuse in one line requests that no node of it can hold."""
    name, nodes, limit = partition_nodes(partition)
    if timeout_min is None:
        timeout_min = min(DEFAULT_TIMEOUT_MIN, limit or DEFAULT_TIMEOUT_MIN)
    if limit is not None and timeout_min > limit:
        raise OfaError(f"partition {name}: --slurm-timeout {timeout_min} exceeds its time limit ({limit} minutes)")
    if gpus is None:
        gpus = DEFAULT_GPUS if any(node.gpus for node in nodes) else 0
    fitting = [node for node in nodes if node.gpus >= gpus] or nodes
    largest = max(fitting, key=lambda node: (node.cpus, node.mem_gb))
    if cpus is None:
        cpus = min(DEFAULT_CPUS, largest.cpus)
    if mem_gb is None:
        mem_gb = max(1, min(DEFAULT_MEM_GB, largest.mem_gb * cpus // max(largest.cpus, 1)))
    if not any(node.gpus >= gpus and node.cpus >= cpus and node.mem_gb >= mem_gb for node in nodes):
        raise OfaError(f"partition {name}: no node holds a job of {gpus} GPU(s), {cpus} CPU(s) and {mem_gb} GB "
                       f"(its largest: {largest.gpus} GPU(s), {largest.cpus} CPU(s), {largest.mem_gb} GB); "
                       f"change --slurm-gpus, --slurm-cpus, --slurm-mem-gb or --slurm-partition")
    return Request(name, gpus, cpus, mem_gb, timeout_min)


def _int(text: str) -> int:
    digits = "".join(c for c in text if c.isdigit())
    return int(digits) if digits else 0


def _gpus(gres: str) -> int:
    """GPUs in a sinfo GRES field: "gpu:4", "gpu:a100:2(S:0-1),gpu:v100:2", "(null)"."""
    return sum(_int(item.split("(")[0].rsplit(":", 1)[-1]) for item in gres.split(",")
               if item.startswith("gpu:"))


def _minutes(limit: str) -> int | None:
    """sinfo's time limit ("infinite", "2-00:00:00", "12:00:00", "30:00") in minutes."""
    if limit.strip().lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = limit.strip().rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = parts + [0] * (3 - len(parts))
    else:  # minutes, minutes:seconds or hours:minutes:seconds
        hours, minutes, seconds = {1: [0, *parts, 0], 2: [0, *parts], 3: parts}[len(parts)]
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


# --- submitting --------------------------------------------------------------------------------


WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # what `--signal=USR1@...` / submitit's USR2@90 send


class Resumable:
    """A job's function: stops at once on SIGTERM and is requeued on the time limit's warning.

    submitit bypasses SIGTERM, so a cancelled or preempted job would run on until SLURM kills
    it (KillWait later); this one exits instead. On the warning signal before the time limit,
    SIGUSR2 (submitit's `--signal=USR2@90`) or SIGUSR1 (`--signal=USR1@...`, also what
    `scancel --signal=USR1` sends), submitit calls `checkpoint` and requeues the job
    (`scontrol requeue`). Either way the function starts again from what it left on disk (a
    run's last complete snapshot, the averaged models already made).
    """

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __call__(self):
        signal.signal(signal.SIGTERM, _stop)
        requeue = _submitit_requeue_handler()
        if requeue is not None:
            for warning in WARNING_SIGNALS:
                signal.signal(warning, requeue)
        return self.function(*self.args)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def _submitit_requeue_handler():
    """The handler submitit installed for its own warning signal (checkpoint, then requeue)."""
    from submitit.core.job_environment import JobEnvironment

    handler = signal.getsignal(JobEnvironment._usr_sig())
    return handler if callable(handler) else None


def _stop(signum, frame):
    print("SIGTERM: stopping now; submitting the job again resumes from what it saved", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def submit_array(executor, label: str, calls: list[tuple[str | tuple[str, ...], Callable, tuple]],
                 after: str | None = None) -> list[Job]:
    """Submit `calls` ((names, function, args)) as one job array, one array task per call;
    `after`: a job they wait for. A call makes one thing (a name) or several (a tuple of names,
    each recorded with the task's job id). Returns one `Job` per name."""
    if not calls:
        return []
    dependency = {"dependency": f"afterok:{after}"} if after else {}
    executor.update_parameters(name=label, slurm_additional_parameters=dependency)
    with executor.batch():
        handles = [executor.submit(Resumable(function, *args)) for _, function, args in calls]
    return [Job(name, str(handle.job_id), str(handle.paths.stderr), after)
            for (names, _, _), handle in zip(calls, handles)
            for name in ((names,) if isinstance(names, str) else names)]


# --- waiting -----------------------------------------------------------------------------------


def wait_for(jobs: list[Job], is_done: Callable[[str], bool], label: str, timeout_min: float | None = None,
             progress: bool = True, poll_s: float = 2.0, grace_s: float = GRACE_S, unit: str = "job") -> Outcome:
    """Poll until every job finished (its output is on disk) or ended without it, or the timeout.

    The progress bar counts `jobs` by their outputs (one Job per output name, so a task of an
    array that makes several outputs counts several times): `unit` names what an output is.

    A job is failed as soon as squeue shows it ended without its output (FAILED, CANCELLED,
    TIMEOUT, ...), when it can never start (then it is cancelled), or `grace_s` after it left
    the queue without its output. Polls get rarer as the wait grows (at most one a minute).
    """
    from tqdm import tqdm

    outcome, open_jobs, seen = Outcome(), list(jobs), _Sightings()
    start = time.monotonic()
    with tqdm(total=len(jobs), desc=label, unit=unit, disable=not progress, file=sys.stderr) as bar:
        while open_jobs:
            states = _ask_queue((job.job_id for job in open_jobs if not is_done(job.name)), seen)
            if states is not None:
                open_jobs = _settle(open_jobs, states, is_done, seen, outcome, grace_s)
                bar.update(len(jobs) - len(open_jobs) - bar.n)
                bar.set_postfix_str(_summary(states, open_jobs), refresh=True)
            elapsed = time.monotonic() - start
            if open_jobs and timeout_min is not None and elapsed >= timeout_min * 60:
                outcome.timed_out = True
                break
            if open_jobs:
                time.sleep(min(60.0, max(poll_s, elapsed / 20)))
    outcome.waiting = open_jobs
    return outcome


def _settle(open_jobs: list[Job], states: dict, is_done, seen: "_Sightings", outcome: Outcome,
            grace_s: float) -> list[Job]:
    """Sort the open jobs by this poll: finished and failed ones go to `outcome` (failures are
    reported at once, jobs that can never start are cancelled); returns those still open."""
    now = time.monotonic()
    still_open, failed = [], []
    for job in open_jobs:
        why = _verdict(job, is_done, states.get(job.job_id), seen, now, grace_s)
        if why == "":
            outcome.finished.append(job)
        elif why is None:
            still_open.append(job)
        else:
            failed.append((job, why))
    _report_failures(failed)
    cancel(job.job_id for job, why in failed if why.startswith("can never start"))
    outcome.failed += failed
    return still_open


def _ask_queue(job_ids, seen: "_Sightings", tries: int = 5) -> dict | None:
    """queue_states, or None when squeue failed (a busy controller); raises after `tries` in a row."""
    try:
        states = queue_states(job_ids)
    except OfaError as error:
        seen.squeue_failures += 1
        if seen.squeue_failures >= tries:
            raise
        print(f"\n{error} (asking again)", file=sys.stderr)
        return None
    seen.squeue_failures = 0
    return states


@dataclass
class _Sightings:
    """What earlier polls saw: each job's last active state, since when it lacks its output, and
    how many squeue calls in a row failed."""

    last_state: dict[str, str] = field(default_factory=dict)
    gone_since: dict[str, float] = field(default_factory=dict)
    squeue_failures: int = 0


def _verdict(job: Job, is_done, state_reason, seen: _Sightings, now: float, grace_s: float) -> str | None:
    """"" when finished, None while it may still finish, else why it failed."""
    if is_done(job.name):
        return ""
    if state_reason is not None and state_reason[0] in ACTIVE:
        seen.last_state[job.job_id] = state_reason[0]
        if is_stuck(state_reason):
            return f"can never start ({state_reason[1]}); cancelled"
        return None
    if state_reason is not None and state_reason[0] not in ("COMPLETED", ""):
        state, reason = state_reason
        return state + (f" ({reason})" if reason not in ("None", "") else "")
    if state_reason is None and seen.last_state.get(job.job_id) == "PENDING":
        return "left the queue before it started (cancelled while pending)"  # SLURM keeps no trace of those
    first = seen.gone_since.setdefault(job.job_id, now)
    if now - first < grace_s:
        return None
    ended = "ended (COMPLETED)" if state_reason is not None else "left the queue"
    return f"{ended} without its output"


def _report_failures(failed: list[tuple[Job, str]]) -> None:
    if not failed:
        return
    details = accounting(job.job_id for job, _ in failed)
    for job, why in failed:
        extra = f" [sacct: {details[job.job_id]}]" if job.job_id in details else ""
        print(f"\nfailed: {job.describe()}: {why}{extra}; log: {job.log}", file=sys.stderr)


def _summary(states: dict, jobs: list[Job]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        state = states.get(job.job_id, ("?", ""))[0].lower() or "?"
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def resume_hint() -> str:
    """The command line to run again, when this process is the `ofa-eval` command."""
    if Path(sys.argv[0]).name == "ofa-eval":
        return "run the same command to collect or resume them: ofa-eval " + shlex.join(sys.argv[1:])
    return "run the same command to collect or resume them"
