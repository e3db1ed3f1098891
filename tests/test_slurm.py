"""`train` and `materialize` on a real SLURM cluster (tests/slurm_cluster.py; CI starts a
single-node one with .ci/slurm-up.sh): idempotent submission, cancelled, preempted and stale
jobs, bounded waiting with partial success, and artifacts bit-identical to `--launcher local`.

The reference for every artifact is the same grid trained by `--launcher local`. Checks that
are refused before anything is queued (the grid, the resources) run without a cluster too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)

OFA_EVAL = Path(sys.executable).with_name("ofa-eval")
SIZES = {"train": 1000, "validation": 8, "test": 8}  # 125 steps per epoch: time to cancel a run mid-way
SMALL = ["--slurm-cpus", "1", "--slurm-mem-gb", "1"]  # two jobs side by side on a 2-core node
BOUND_S = 300  # no single command of these tests should take longer; a hang fails instead of blocking CI


@pytest.fixture(scope="module")
def world(tiny_world):
    """A synthetic NER corpus, a tiny model, and a grid of 2 configurations (one seed)."""
    root = tiny_world("slurm-world", SIZES)
    write_grid(root / "grid.toml", epochs=2)
    return root


def write_grid(path: Path, epochs: int, batch_size: int = 8) -> Path:
    path.write_text("\n".join([
        'model = "tiny"', 'model_name_or_path = "./model"', "learning_rates = [1e-2, 5e-3]",
        f"batch_sizes = [{batch_size}]", "seeds = [1]", f"epochs = {epochs}", "max_length = 48",
        'weight_storage = "needed"', "[ner]", 'data = { directory = "data/ner", dataset = "synth-ner" }',
        'head_alignment = { mode = "shared-init", seed = 0 }']) + "\n")
    return path


def ofa(*args, env=None, db=None) -> subprocess.CompletedProcess:
    """The ofa-eval command, in a process of its own (one CPU thread, offline)."""
    env = {**(env or os.environ), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(OFA_EVAL), *(["--db", str(db)] if db else []), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=BOUND_S)


def start(*args, env, db=None) -> subprocess.Popen:
    env = {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(OFA_EVAL), *(["--db", str(db)] if db else []), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def local_runs(world):
    """The reference: the grid trained here, one run after another."""
    result = ofa("train", world / "grid.toml", "--out", world / "runs-local", "--quiet")
    assert result.returncode == 0, result.stderr
    return world / "runs-local"


# --- SLURM, asked directly (the test's own view of the queue) -----------------------------------


def squeue(env, job_ids) -> dict[str, str]:
    """{job id: state} of the given jobs (array tasks one by one), ended ones included."""
    bases = ",".join(sorted({str(j).split("_")[0] for j in job_ids}))
    out = subprocess.run(["squeue", "--array", "--states=all", "--noheader", "--format=%i %T", f"--jobs={bases}"],
                         capture_output=True, text=True, env=env).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def scancel(env, *job_ids, signal=None) -> None:
    subprocess.run(["scancel", *([f"--signal={signal}"] if signal else []), *map(str, job_ids)],
                   check=True, env=env)


def block_the_node(env, folder: Path) -> str:
    """A job holding every CPU of the node, so that what is submitted next stays pending."""
    cpus = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%c"], capture_output=True, text=True,
                          env=env).stdout.split()[0]
    done = subprocess.run(["sbatch", "--parsable", f"--cpus-per-task={cpus}", f"--output={folder}/blocker.out",
                           "--wrap", "sleep 600"], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip().split(";")[0]


def recorded(folder: Path) -> dict:
    path = folder / "_slurm" / "jobs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def wait_until(condition, what: str, process: subprocess.Popen | None = None, every_s: float = 0.2):
    """condition()'s first true value; fails after BOUND_S, or when `process` ended before."""
    end = time.monotonic() + BOUND_S
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the command ended (exit status {process.returncode}) before {what}:\n{out}{err}")
        time.sleep(every_s)
    raise AssertionError(f"not within {BOUND_S}s: {what}")


@pytest.fixture
def own_jobs(slurm_cluster, tmp_path):
    """Job ids this test started by hand; they and every recorded job under tmp_path are
    cancelled at the end, so that nothing is left in the queue."""
    ids: list[str] = []
    yield ids
    for record in tmp_path.rglob("jobs.json"):
        ids += [entry["job_id"] for entry in json.loads(record.read_text()).values()]
    if ids:
        subprocess.run(["scancel", *ids], env=slurm_cluster, capture_output=True)


def submitted(output: str) -> int:
    return int(re.search(r"submitted (\d+) (?:materialization )?job", output).group(1))


def snapshots_written(run: Path) -> int:
    manifest = run / "manifest.json"
    if not manifest.is_file():
        return 0
    data = json.loads(manifest.read_text())
    return 0 if data.get("state") == "complete" else len(data.get("snapshots", []))


def assert_identical_runs(ours: Path, reference: Path):
    """Every weight, prediction and head file the same bytes; manifests equal but for sizes on disk."""
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file() and "_slurm" not in p.parts)
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file() and "_slurm" not in p.parts)
    for name in files:
        if name.name == "manifest.json":
            a, b = (json.loads((root / name).read_text()) for root in (ours, reference))
            assert {k: v for k, v in a.items() if k != "path"} == {k: v for k, v in b.items() if k != "path"}, name
        else:
            assert (ours / name).read_bytes() == (reference / name).read_bytes(), name


# --- before anything is queued (no cluster needed) -------------------------------------------


def test_a_grid_that_cannot_train_is_refused_before_submitting(world, tmp_path):
    grid = write_grid(world / "short.toml", epochs=1, batch_size=512)  # 2 steps for 10 snapshots
    result = ofa("train", grid, "--out", tmp_path / "runs", "--launcher", "slurm")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "2 optimizer step(s)" in result.stderr and "10 snapshots" in result.stderr
    assert not (tmp_path / "runs" / "_slurm").exists()  # nothing was submitted

    missing = world / "missing-data.toml"
    missing.write_text(grid.read_text().replace("data/ner", "data/absent").replace("512", "8"))
    result = ofa("train", missing, "--out", tmp_path / "runs", "--launcher", "slurm")
    assert result.returncode == 2 and "data/absent" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("limit,minutes", [("infinite", None), ("30", 30), ("30:00", 30), ("12:00:00", 720),
                                           ("2-00:00:00", 2880), ("1-12", 2160), ("1-12:30", 2190)])
def test_partition_time_limits_in_sinfo_formats(limit, minutes):
    from ofa_eval.jobs.slurm import _minutes

    assert _minutes(limit) == minutes


def fake_sinfo(monkeypatch, lines: str):
    from ofa_eval.jobs import slurm as jobs

    monkeypatch.setattr(jobs, "slurm", lambda *command, **_: subprocess.CompletedProcess(command, 0, lines, ""))


def test_requests_default_to_what_a_gpu_partition_holds(monkeypatch):
    from ofa_eval.common.errors import OfaError
    from ofa_eval.jobs.slurm import Request, fit_request

    fake_sinfo(monkeypatch, "cpu|32|128000|(null)|infinite\n"  # sinfo --Node: one line per node
                            "gpu*|64|524288|gpu:a100:4(S:0-1),gpu:v100:4|2-00:00:00\n"  # MB
                            "gpu*|16|64000|gpu:v100:2|2-00:00:00\n")
    assert fit_request(None, None, None, None, None) == Request("gpu", 1, 8, 64, 1440)
    assert fit_request(None, 8, 64, 500, 2880) == Request("gpu", 8, 64, 500, 2880)
    with pytest.raises(OfaError, match="no node holds a job of 9 GPU"):
        fit_request(None, 9, None, None, None)
    with pytest.raises(OfaError, match="exceeds its time limit"):
        fit_request(None, None, None, None, 2881)
    fake_sinfo(monkeypatch, "cpu|4|8000|(null)|1:00:00\n")
    assert fit_request("cpu", None, None, None, None) == Request("cpu", 0, 4, 7, 60)


def test_without_slurm_commands_the_launcher_says_so(world, tmp_path):
    result = ofa("train", world / "grid.toml", "--out", tmp_path / "runs", "--launcher", "slurm",
                 env={**os.environ, "PATH": str(OFA_EVAL.parent)})
    assert result.returncode == 2 and result.stderr.startswith("error: --launcher slurm: sbatch")
    assert "Traceback" not in result.stderr


def test_averaged_models_are_grouped_into_array_tasks_by_pool():
    from ofa_eval.averages.materialize import AveragePlan, job_groups

    def plans(task, n):
        return [AveragePlan(task, "m", "ca", (i,), (i,), (f"{i}",), (f"{i}",), f"{task}{i:02d}", "run")
                for i in range(n)]

    groups = job_groups(plans("nli", 5) + plans("ner", 2), per_job=2)
    assert [[p.key for p in group] for group in groups] == [
        ["nli00", "nli01"], ["nli02", "nli03"], ["nli04"], ["ner00", "ner01"]]
    mixed = plans("qa", 1) + plans("nli", 2) + plans("qa", 2)[1:]
    assert [[p.key for p in group] for group in job_groups(mixed, per_job=16)] == [["qa00", "qa01"],
                                                                                   ["nli00", "nli01"]]
    spread = job_groups(plans("ner", 17), per_job=16)
    assert [len(group) for group in spread] == [9, 8]  # a pool's plans spread evenly over its tasks


# --- on the cluster --------------------------------------------------------------------------


def test_requests_the_partition_cannot_hold_are_refused(world, tmp_path, slurm_cluster):
    for request, words in ((["--slurm-gpus", "1"], "1 GPU(s)"), (["--slurm-cpus", "4096"], "4096 CPU(s)"),
                           (["--slurm-mem-gb", "100000"], "100000 GB")):
        result = ofa("train", world / "grid.toml", "--out", tmp_path / "runs", "--launcher", "slurm", *request,
                     env=slurm_cluster)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: partition ") and words in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert recorded(tmp_path / "runs") == {}


def test_train_on_slurm_resubmits_only_what_is_missing(world, local_runs, tmp_path, slurm_cluster, own_jobs):
    env, runs = slurm_cluster, tmp_path / "runs"
    train = ("train", world / "grid.toml", "--out", runs, "--launcher", "slurm", *SMALL)
    own_jobs.append(block_the_node(env, tmp_path))

    first = ofa(*train, "--no-wait", env=env)
    assert first.returncode == 0, first.stderr
    assert submitted(first.stdout) == 3  # the head job and an array of 2 runs
    assert "0 GPU(s)" in first.stderr  # a GPU-less partition: the default asks for none
    jobs = recorded(runs)
    head = jobs["_heads/ner-tiny"]["job_id"]
    assert all(entry["after"] == head for name, entry in jobs.items() if not name.startswith("_heads"))

    second = ofa(*train, "--no-wait", env=env)  # everything is queued: nothing is submitted twice
    assert second.returncode == 0, second.stderr
    assert submitted(second.stdout) == 0 and "already queued or running" in second.stdout
    assert recorded(runs) == jobs

    scancel(env, head)  # the array now waits for a head that will never come
    third = ofa(*train, "--no-wait", env=env)
    assert third.returncode == 0, third.stderr
    assert submitted(third.stdout) == 3  # a new head job, and the runs again after it
    assert third.stderr.count("cancelled ner-tiny-") == 2  # the stale ones
    stale = [entry["job_id"] for entry in jobs.values()]
    wait_until(lambda: all(state == "CANCELLED" for state in squeue(env, stale).values()), "stale jobs cancelled")
    jobs = recorded(runs)
    assert all(entry["after"] == jobs["_heads/ner-tiny"]["job_id"] for name, entry in jobs.items()
               if not name.startswith("_heads"))

    scancel(env, own_jobs[0])  # free the node
    waiting = start(*train, "--wait", env=env)
    names = sorted(name for name in jobs if not name.startswith("_heads"))
    # one run is cancelled while it trains, the other gets the time limit's warning signal
    cancelled, warned = names
    wait_until(lambda: snapshots_written(runs / cancelled) >= 1 and snapshots_written(runs / warned) >= 1,
               "both runs have a snapshot", waiting)
    scancel(env, jobs[cancelled]["job_id"])
    scancel(env, jobs[warned]["job_id"], signal="USR2")
    out, err = waiting.communicate(timeout=BOUND_S)
    assert waiting.returncode == 2, out + err
    assert f"failed: {cancelled} (job {jobs[cancelled]['job_id']}): CANCELLED" in err
    assert jobs[cancelled]["log"] in err and "ofa-eval train" in err
    assert "SIGTERM: stopping now" in Path(jobs[cancelled]["log"]).read_text()
    assert json.loads((runs / warned / "manifest.json").read_text())["state"] == "complete"  # requeued, resumed
    assert "SIGUSR2" in Path(recorded(runs)[warned]["log"]).read_text()
    assert json.loads((runs / cancelled / "manifest.json").read_text())["state"] != "complete"

    again = ofa(*train, "--wait", "--quiet", env=env)
    assert again.returncode == 0, again.stderr
    assert submitted(again.stdout) == 1
    assert {name: entry["job_id"] for name, entry in recorded(runs).items() if name != cancelled} == \
        {name: entry["job_id"] for name, entry in jobs.items() if name != cancelled}
    last = ofa(*train, "--wait", env=env)
    assert last.returncode == 0 and submitted(last.stdout) == 0 and "every run is complete" in last.stdout

    assert_identical_runs(runs, local_runs)


def test_a_run_signalled_mid_way_is_requeued_and_resumes_to_the_same_artifacts(world, local_runs, tmp_path,
                                                                                slurm_cluster, own_jobs):
    """SIGUSR1 (the time limit's warning as `--signal=USR1@...` sends it) and `scontrol requeue`
    (what preemption with PreemptMode=REQUEUE does: SIGTERM, then a requeue) mid-run: each job
    is requeued without a new `train`, resumes after its last complete snapshot (the first
    snapshot's files are not written again) and ends with an uninterrupted local run's artifacts."""
    env, runs = slurm_cluster, tmp_path / "runs"
    waiting = start("train", world / "grid.toml", "--out", runs, "--launcher", "slurm", "--wait", *SMALL, env=env)
    jobs = wait_until(lambda: recorded(runs), "the jobs are submitted", waiting)
    warned, requeued = sorted(name for name in jobs if not name.startswith("_heads"))
    wait_until(lambda: snapshots_written(runs / warned) >= 1 and snapshots_written(runs / requeued) >= 1,
               "both runs have a snapshot", waiting)
    first = {name: snapshot_files(runs / name, 1) for name in (warned, requeued)}
    scancel(env, jobs[warned]["job_id"], signal="USR1")
    subprocess.run(["scontrol", "requeue", jobs[requeued]["job_id"]], check=True, env=env)
    out, err = waiting.communicate(timeout=BOUND_S)
    assert waiting.returncode == 0, out + err
    assert "Caught signal SIGUSR1" in Path(jobs[warned]["log"]).read_text()
    assert "SIGTERM: stopping now" in Path(jobs[requeued]["log"]).read_text()
    assert recorded(runs) == jobs  # requeued by SLURM, not submitted again
    assert {name: snapshot_files(runs / name, 1) for name in (warned, requeued)} == first  # resumed
    assert_identical_runs(runs, local_runs)


def snapshot_files(run: Path, index: int) -> dict[str, tuple[int, int]]:
    """{prediction file: (inode, mtime)} of a snapshot: files written again get a new inode."""
    folder = run / "predictions" / f"snapshot-{index:02d}"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_materialize_on_slurm_reports_a_cancelled_task_and_resumes(local_runs, tmp_path, slurm_cluster, own_jobs):
    env, db = slurm_cluster, tmp_path / "store.duckdb"
    assert ofa("ingest", local_runs, db=db).returncode == 0
    materialize = ("materialize", "--task", "ner", "--strategy", "accumulative", "--variant", "last", "--variant",
                   "ca", "-R", 2, "--draws", 2, "--seed", 0, "--launcher", "slurm", "--averages-per-job", 2, *SMALL)
    averages = tmp_path / "averages"
    own_jobs.append(block_the_node(env, tmp_path))

    waiting = start(*materialize, env=env, db=db)
    jobs = wait_until(lambda: recorded(averages), "the materialization jobs are submitted", waiting)
    victim_job = jobs[sorted(jobs)[0]]["job_id"]
    victims = sorted(name for name, entry in jobs.items() if entry["job_id"] == victim_job)
    assert 1 <= len(victims) <= 2 < len(jobs)  # a task makes up to 2 of the 4 or more averaged models
    wait_until(lambda: squeue(env, [victim_job]).get(victim_job) == "PENDING", "the job is pending", waiting)
    scancel(env, victim_job)  # cancelled while pending: no job ever ran
    scancel(env, own_jobs[0])
    out, err = waiting.communicate(timeout=BOUND_S)
    assert waiting.returncode == 2, out + err
    for victim in victims:
        assert f"failed: {victim} (job {victim_job}): left the queue" in err
    assert jobs[victims[0]]["log"] in err and f"{len(victims)} did not finish" in err
    assert count_averages(db) == len(jobs) - len(victims)  # what finished is ingested

    second = ofa(*materialize, "--no-wait", env=env, db=db)  # submits the missing ones and returns
    assert second.returncode == 0, second.stderr
    assert submitted(second.stderr) == 1 and f"for {len(victims)} averaged model(s)" in second.stderr
    wait_until(lambda: all((averages / victim / "average.json").is_file() for victim in victims),
               "the resubmitted job finishes")
    third = ofa(*materialize, env=env, db=db)  # collects them: nothing is submitted again
    assert third.returncode == 0, third.stderr
    assert submitted(third.stderr) == 0 and f"{len(victims)} averaged model(s) materialized" in third.stdout
    assert count_averages(db) == len(jobs)
    fourth = ofa(*materialize, env=env, db=db)
    assert fourth.returncode == 0 and "0 averaged model(s) materialized" in fourth.stdout
    assert "submitted" not in fourth.stderr


def test_materialize_on_slurm_is_one_array_identical_to_local(local_runs, tmp_path, slurm_cluster, own_jobs):
    """All averaged models from one sbatch job array; each task builds the model once for the
    averages it makes; folders and scores the same as --launcher local."""
    env = slurm_cluster
    materialize = ("materialize", "--task", "ner", "--strategy", "accumulative", "--variant", "last",
                   "--variant", "src-dev", "--variant", "ca", "-R", 2, "--draws", 2, "--seed", 0)
    stores = {where: tmp_path / where / "store.duckdb" for where in ("local", "slurm")}
    for db in stores.values():
        db.parent.mkdir()
        assert ofa("ingest", local_runs, db=db).returncode == 0
    here = ofa(*materialize, db=stores["local"])
    assert here.returncode == 0, here.stderr
    reference = tmp_path / "local" / "averages"
    made = sorted(p.name for p in reference.iterdir())
    per_job = -(-len(made) // 2)  # two array tasks

    result = ofa(*materialize, "--launcher", "slurm", "--averages-per-job", per_job, *SMALL, env=env,
                 db=stores["slurm"])
    assert result.returncode == 0, result.stderr
    ours = tmp_path / "slurm" / "averages"
    jobs = recorded(ours)
    assert sorted(jobs) == made
    tasks = {entry["job_id"] for entry in jobs.values()}
    assert len(tasks) == 2 and len({task.split("_")[0] for task in tasks}) == 1  # one array, two tasks
    assert submitted(result.stderr) == 2 and f"for {len(made)} averaged model(s)" in result.stderr
    assert set(squeue(env, tasks)) == tasks  # the array has exactly these tasks

    averaged = {name for name in made if len(json.loads((ours / name / "average.json").read_text())["members"]) > 1}
    assert len(averaged) >= 3  # LAST, SRC-DEV and CA of two runs: some task averages two or more
    for task in tasks:
        names = [name for name, entry in jobs.items() if entry["job_id"] == task]
        log = Path(jobs[names[0]]["log"]).read_text()
        assert log.count("building the model") == (1 if averaged & set(names) else 0), log

    assert_identical_runs(ours, reference)
    assert scores(stores["slurm"]) == scores(stores["local"]) and scores(stores["local"])


def scores(db: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT a.recipe, a.member_key, e.dataset, e.language, e.split, s.metric, s.value "
                           "FROM score_table s JOIN average_table a USING (average_id) "
                           "JOIN eval_set_table e USING (eval_set_id) ORDER BY ALL").fetchall()


def count_averages(db: Path) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM average_table").fetchone()[0]
