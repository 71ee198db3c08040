"""Fault injection on `python -m eval sweep` (issue 21), on the tiniest sweep it runs: one
ResNet-20 of width 4 trained 24 steps, two multipliers, 32 test images.

- two drivers started at once on one sweep finish it with every job run once (the reference);
- a driver killed three times (SIGKILL, SIGTERM) at seeded points of the phases it goes through
  (training, export, cells) takes its workers with it, and reruns end with the reference's
  table, value for value;
- a truncated result.json and a changed model.onnx are rerun, not reported;
- a full disk (ENOSPC injected where one job writes its temp files) fails that job with a one-line reason
  and the others finish;
- results from other code are reported as such and rerun by --rerun-stale;
- on Ray, a worker killed mid-job is retried, and a restarted driver reconnecting to the
  cluster takes the finished jobs' results.
"""

import errno
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml

from axmoe_testing import require_tool
from eval import identity, jobs, locks
from eval.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "faults",
    "dataset": "fashion-mnist",
    "archs": ["resnet20"],
    "topologies": ["dense"],
    "multipliers": ["mul8s_1L2L", "mul8s_1KV6"],
    "workers": 2,
    "threads": 1,
    "train": {"epochs": 1, "max_steps": 24, "batch_size": 16, "limit_train": 384, "limit_test": 32,
              "model_opt": {"width": 4}, "log_every": 0, "eval_batch_size": 32},
    "export": {"calib_samples": 16},
    "eval": {"limit": 32, "batch": 32, "warmup": 1},
}
#: columns measured in time (they differ between any two runs); every other value must be equal
TIMED = ("p50_ms", "p90_ms", "images_per_s", "code")
KILL_SEED = 21


def write_config(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out": str(folder / "out"), **overrides}))
    return path


def driver(config: Path, *extra: str) -> subprocess.Popen:
    path = config.parent / f"driver-{time.monotonic_ns()}.log"
    with path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "eval", "sweep", str(config), *extra], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = path
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    assert proc.wait(timeout=timeout) == 0, output(proc)[-3000:]
    return output(proc)


def table(out: Path) -> list[dict]:
    import csv

    with (out / "results.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(f)]


def executions(out: Path) -> dict[str, int]:
    """How many times each job ran: its "== <kind> job" lines."""
    return {p.name: (p / "log.txt").read_text().count(f"== {p.name.split('-')[0]} job")
            for p in sorted((out / "jobs").iterdir()) if (p / "log.txt").is_file()}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def phase(out: Path) -> str:
    """What the workers of a sweep do now, told by the job folders they hold: "train",
    "export", "cells", or "idle" (a worker importing before training counts as idle)."""
    folders = sorted((out / "jobs").glob("*-*")) if (out / "jobs").is_dir() else []
    for folder in folders:
        if folder.name.startswith("model-") and locks.holder(folder) is not None:
            log = folder / "train" / "log.jsonl"
            if (folder / "train" / "metrics.json").is_file():
                return "export"
            # log.jsonl written since this worker took the lock: the training is under way
            if log.is_file() and log.stat().st_mtime >= (folder / locks.LOCK).stat().st_mtime:
                return "train"
    return "cells" if any(f.name.startswith("cell-") and locks.holder(f) for f in folders) else "idle"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fashion):
    """Two drivers started together on one fresh sweep: each job runs once; their table."""
    folder = tmp_path_factory.mktemp("faults-reference")
    config = write_config(folder)
    first, second = driver(config), driver(config)
    printed = finish(first) + finish(second)
    out = folder / "out"
    return {"config": config, "out": out, "table": table(out), "printed": printed}


def test_two_drivers_on_one_sweep_run_each_job_once(reference):
    out = reference["out"]
    assert executions(out) == {p.name: 1 for p in (out / "jobs").iterdir()} and len(executions(out)) == 3
    assert "(run by another process)" in reference["printed"]
    assert len(reference["table"]) == 2 and all(r["status"] == "ok" for r in reference["table"])
    assert all(locks.holder(p) is None for p in (out / "jobs").iterdir())


def test_killed_driver_takes_its_workers_and_reruns_to_the_same_table(reference, tmp_path):
    """Three kills at seeded points (phase, signal, delay), then a rerun to completion."""
    rng = random.Random(KILL_SEED)
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]
    rng.shuffle(signals)
    plan = [(target, sig, rng.uniform(0.0, 0.25)) for target, sig in zip(("train", "export", "cells"), signals)]
    config = write_config(tmp_path)
    out = tmp_path / "out"
    hit = []
    for target, sig, delay in plan:
        proc = driver(config)
        deadline = time.monotonic() + 240
        while phase(out) != target and proc.poll() is None:
            assert time.monotonic() < deadline, f"no {target} phase: {output(proc)[-2000:]}"
            time.sleep(0.01)
        time.sleep(delay)
        workers = children(proc.pid)
        hit.append(phase(out))
        owners = [o["pid"] for p in (out / "jobs").iterdir() if (o := locks.holder(p))]
        assert owners and set(owners) <= set(workers), (owners, workers)  # the driver's workers hold the jobs
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), output(proc)[-2000:]
        # no worker outlives its driver: none keeps writing into the folders a rerun uses
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], (target, sig)
    assert hit == ["train", "export", "cells"], (plan, hit)
    finish(driver(config))
    assert table(out) == reference["table"]
    assert "taking over the lock" in "".join((p / "log.txt").read_text() for p in (out / "jobs").iterdir())



class SerialExecutor:
    """Runs each job in this process when submitted (so a test can patch what a job calls)."""

    def submit(self, fn, *args, cpus=1):
        future = Future()
        future.set_result(fn(*args))
        return future

    def wait(self, handles, timeout=None):
        return list(handles)

    def result(self, handle):
        return handle.result()

    def shutdown(self, abort=False, handles=()):
        pass


def copy_model(reference, tmp_path, **overrides) -> Path:
    """A sweep config in tmp_path that starts with the reference's finished model job."""
    model = next((reference["out"] / "jobs").glob("model-*"))
    shutil.copytree(model, tmp_path / "out" / "jobs" / model.name, ignore=shutil.ignore_patterns(locks.LOCK))
    return write_config(tmp_path, **overrides)


def test_corrupt_files_are_rerun_not_reported(reference, tmp_path, monkeypatch, capsys):
    """A truncated result.json and a changed model.onnx: those two cells run again, from
    emptied folders, and the table is the reference's again."""
    import eval.executors

    shutil.copytree(reference["out"] / "jobs", tmp_path / "out" / "jobs", ignore=shutil.ignore_patterns(locks.LOCK))
    config = write_config(tmp_path)
    monkeypatch.setattr(eval.executors, "make_executor", lambda *args: SerialExecutor())
    out = tmp_path / "out"
    before = executions(out)
    cells = sorted((out / "jobs").glob("cell-*"))
    text = (cells[0] / jobs.RESULT).read_text()
    (cells[0] / jobs.RESULT).write_text(text[: len(text) // 2])
    onnx_bytes = bytearray((cells[1] / "model.onnx").read_bytes())
    onnx_bytes[len(onnx_bytes) // 2] ^= 0xFF
    (cells[1] / "model.onnx").write_bytes(bytes(onnx_bytes))
    assert main(["sweep", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "2 jobs to run" in printed
    assert f"{cells[0].name} runs again: result.json is not valid JSON (truncated or corrupt)" in printed
    assert f"{cells[1].name} runs again: model.onnx does not match the sha256 in result.json" in printed
    after = executions(out)
    assert {name: after[name] - before[name] for name in after} == {
        p.name: int(p in cells) for p in (out / "jobs").iterdir()}
    assert "rerunning from an emptied folder: model.onnx does not match" in (cells[1] / "log.txt").read_text()
    assert table(out) == reference["table"]
    assert all(jobs.cached(p) is not None for p in (out / "jobs").iterdir())


def test_full_disk_fails_one_job_with_a_one_line_reason(reference, tmp_path, monkeypatch, capsys):
    """ENOSPC at the write of one cell's temp files (half written, then the error): that job
    fails with a one-line reason and leaves no temp file; the other jobs finish."""
    import eval.executors

    config = copy_model(reference, tmp_path)
    monkeypatch.setattr(eval.executors, "make_executor", lambda *args: SerialExecutor())
    jobs_dir = tmp_path / "out" / "jobs"
    cells = sorted(p.name for p in (reference["out"] / "jobs").glob("cell-*"))
    full = jobs_dir / cells[0]
    write_text = Path.write_text

    def disk_full(self, data, *args, **kwargs):
        if self.parent == full and self.name.endswith(".tmp"):
            write_text(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert main(["sweep", str(config)]) == 1
    printed = capsys.readouterr().out
    reason = f"disk full (ENOSPC) writing {full / 'result.json.tmp'}"
    assert f"FAILED {reason} (log: " in printed
    last = printed.rstrip().splitlines()[-1]  # one line, naming the job and the reason
    assert last.startswith("1 of 2 cells did not finish: cell resnet20/dense mul8s_") and last.endswith(f": {reason}")
    assert not (full / jobs.RESULT).exists() and not list(full.glob("*.tmp"))
    assert all(jobs.cached(p) is not None for p in jobs_dir.iterdir() if p != full)  # the others are intact
    rows = {r["cell"]: r["status"] for r in table(tmp_path / "out")}
    assert rows == {cells[0].split("-")[1]: "failed", cells[1].split("-")[1]: "ok"}
    # with room again, the failed job is the only one that runs
    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(["sweep", str(config)]) == 0
    assert "1 jobs to run" in capsys.readouterr().out
    assert executions(tmp_path / "out")[cells[0]] == 2 and executions(tmp_path / "out")[cells[1]] == 1
    assert table(tmp_path / "out") == reference["table"]


def test_results_of_other_code_are_reported_and_rerun_when_stale(reference, tmp_path, monkeypatch, capsys):
    import eval.executors

    shutil.copytree(reference["out"] / "jobs", tmp_path / "out" / "jobs", ignore=shutil.ignore_patterns(locks.LOCK))
    config = write_config(tmp_path)
    ours = {"version": "0.1.0", "commit": "1" * 40, "dirty": False, "diff": None, "library": "a" * 64}
    theirs = {**ours, "commit": "2" * 40}
    stale = sorted((tmp_path / "out" / "jobs").glob("cell-*"))[1]
    for folder in (tmp_path / "out" / "jobs").iterdir():
        result = json.loads((folder / jobs.RESULT).read_text())
        jobs.write_json(folder / jobs.RESULT, {**result, "identity": theirs if folder == stale else ours})
    monkeypatch.setattr(identity, "current", lambda: ours)
    monkeypatch.setattr(eval.executors, "make_executor", lambda *args: SerialExecutor())

    assert main(["sweep", str(config)]) == 0  # reused, and said so
    printed = capsys.readouterr().out
    assert "0 jobs to run" in printed and "these results come from 2 versions of the code" in printed
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Mixed code: these results come from 2 versions of the code**")
    assert f"`{identity.label(theirs)}` (1 jobs)" in report and f"`{identity.label(ours)}` (2 jobs)" in report
    codes = {r["cell"]: r["code"] for r in _csv(tmp_path / "out")}
    assert codes[stale.name.split("-")[1]] == identity.label(theirs) == "0.1.0 2222222222 lib aaaaaaaa"

    assert main(["sweep", str(config), "--dry-run", "--rerun-stale"]) == 0
    assert f"{stale.name}  to run (made by other code (0.1.0 2222222222 lib aaaaaaaa))" in capsys.readouterr().out
    before = executions(tmp_path / "out")
    assert main(["sweep", str(config), "--rerun-stale"]) == 0
    printed = capsys.readouterr().out
    assert "1 jobs to run" in printed and "versions of the code" not in printed
    after = executions(tmp_path / "out")
    assert {k: after[k] - before[k] for k in after} == {k: int(k == stale.name) for k in after}
    assert json.loads((stale / jobs.RESULT).read_text())["identity"] == ours
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert report.splitlines()[2] == f"Code: {identity.label(ours)}."
    assert table(tmp_path / "out") == reference["table"]


def _csv(out: Path) -> list[dict]:
    import csv

    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_ray_retries_a_lost_worker_and_a_restarted_driver_reconnects(reference, tmp_path):
    """The Ray worker training the model is SIGKILLed (what a lost node does to a task): Ray
    retries the task, which takes over the lock and finishes. The driver is then SIGKILLed and
    restarted against the same cluster: it plans from the job folders, so the model job is
    not run a third time."""
    require_tool(importlib.util.find_spec("ray") is not None, "ray", "pip install -e '.[ray]'")
    import ray

    config = write_config(tmp_path)
    out = tmp_path / "out"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        args = ("--executor", "ray", "--address", address)
        proc = driver(config, *args)
        deadline = time.monotonic() + 240
        while phase(out) != "train":  # the model job's worker, killed as a lost node kills it
            assert proc.poll() is None and time.monotonic() < deadline, output(proc)[-2000:]
            time.sleep(0.01)
        model = next((out / "jobs").glob("model-*"))
        owner = locks.holder(model)
        assert owner is not None and owner["pid"] != proc.pid
        os.kill(owner["pid"], signal.SIGKILL)
        # a hang guard, not a time limit: the retry restarts the worker and its training, which
        # on 2 loaded cores (the rest of make test beside it) took ~2 minutes
        deadline = time.monotonic() + 600
        while not (model / jobs.RESULT).is_file():  # the retried task finished the model
            assert proc.poll() is None and time.monotonic() < deadline, output(proc)[-2000:]
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=60)
        printed = finish(driver(config, *args))
    finally:
        ray.shutdown()
    assert re.search(r"2 cells over 1 models, [012] jobs to run", printed), printed[-2000:]
    log = (model / "log.txt").read_text()
    assert log.count("== model job") == 2 and "taking over the lock" in log  # the retry, not a third run
    assert table(out) == reference["table"]
