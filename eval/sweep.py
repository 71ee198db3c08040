"""`python -m eval sweep CONFIG.yaml`: `run(args)` plans the jobs, runs those not cached, and
renders the report.

Jobs form a two-level graph: one model job per value of the train/export axes (arch,
topology: `eval.axes`), and one cell job per cell (those and the multiplier, retrained and
backend axes) that starts as soon as its model is ready. Cached jobs (their folder holds a
result.json whose outputs still match: `eval.jobs.check`) are not submitted, so a finished
sweep starts no worker at all and only re-renders.

    OUT/jobs/model-<hash>/, OUT/jobs/cell-<hash>/    (eval.jobs)
    OUT/sweep.yaml                                   the resolved config
    OUT/results.csv, OUT/results.json                one row per cell (eval.report)
    OUT/report/report.md + *.png

Faults: a job folder is locked while a process works in it (`eval.locks`). A job locked by
another process (a second driver on the same sweep, a worker of a driver being restarted) is
not submitted: the driver waits for it and takes its result, or submits it once the lock is
free without a result. SIGTERM and Ctrl-C stop the workers before the driver exits; SIGKILL
of the driver takes its local workers with it (`eval.executors`). A result from other code is
reused and reported as such, unless --rerun-stale (`triage`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eval import axes, identity, locks
from eval.jobs import cell_spec, check, job_hash, model_spec, rejects, run_job
from eval.sweep_config import SweepConfig, load_config

#: seconds between looks at the jobs another process holds
WATCH_POLL_S = 1.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the driver so that it stops its workers on the way out."""


@dataclass
class Job:
    spec: dict[str, Any]
    folder: Path
    label: str
    needs: str | None = None                # hash of the model job a cell needs
    result: dict[str, Any] | None = None
    cell: dict[str, Any] = field(default_factory=dict)  # {axis name: value} (eval.axes)
    why: str | None = None                  # why a job that has a result.json runs again

    @property
    def hash(self) -> str:
        return self.folder.name.split("-", 1)[1]


def plan(config: SweepConfig) -> tuple[dict[str, Job], list[Job]]:
    """Model jobs by hash, and the cell jobs in report order, each with its valid result."""
    jobs_dir = config.out.resolve() / "jobs"
    models: dict[str, Job] = {}
    cells: list[Job] = []
    for cell in config.cells():
        mspec = model_spec(cell, config.dataset, config.train, config.export)
        mhash = job_hash(mspec)
        model_label = "/".join(axes.tags(cell, "model"))
        if mhash not in models:
            models[mhash] = Job(mspec, jobs_dir / f"model-{mhash}", f"model {model_label}")
        cspec = cell_spec(cell, mhash, config.dataset, config.retrain, config.eval)
        label = " ".join(["cell", model_label, *axes.tags(cell, "cell")])
        cells.append(Job(cspec, jobs_dir / f"cell-{job_hash(cspec)}", label, needs=mhash, cell=cell))
    for job in [*models.values(), *cells]:
        job.result, job.why = check(job.folder)
    return models, cells


def triage(models: dict[str, Job], cells: list[Job], code: dict[str, Any] | None = None) -> None:
    """Drop the results that must not be reused: a cell's made from other outputs of its model
    (or whose model runs again), and with `code` (--rerun-stale) those made by other code."""
    for job in models.values():
        if job.result is not None and (why := rejects(job.result, None, code)):
            job.result, job.why = None, why
    for job in cells:
        model = models[job.needs].result
        if job.result is None:
            continue
        why = rejects(job.result, model, code) if model is not None else "its model job runs again"
        if why:
            job.result, job.why = None, why


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _describe(job: Job) -> str:
    r = job.result or {}
    if r.get("status") != "ok":
        return f"{job.label}: FAILED {r.get('error', '')} (log: {job.folder / 'log.txt'})"
    if job.spec["kind"] == "model":
        return f"{job.label}: fp32 top-1 {r['fp32_top1']:.4f} after {r['train_steps']} steps ({r['wall_s']:.0f} s)"
    power = r.get("normalised_power")
    return (f"{job.label}: top-1 {r['top1']:.4f}, power {power:.3f}" if power is not None else
            f"{job.label}: top-1 {r['top1']:.4f}") + f" ({r['wall_s']:.0f} s)"


def progress(job: Job) -> str:
    """A few words on how far a running model job is, from the files it writes."""
    name = job.spec["topology"]
    log = job.folder / "train" / "log.jsonl"
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return f"{name}: starting"
    total, step = None, 0
    for line in lines:
        record = json.loads(line) if line.startswith("{") else {}
        total = record.get("total_steps", total)
        step = record.get("step", step) if record.get("event") in ("step", "epoch") else step
    if (job.folder / "export.json").is_file() or (job.folder / "train" / "metrics.json").is_file():
        return f"{name}: exporting"
    cap = job.spec["train"].get("max_steps")
    total = min(total, cap) if total and cap else total
    return f"{name}: step {step}/{total}" if total else f"{name}: training"


def execute(models: dict[str, Job], cells: list[Job], executor_name: str, workers: int, threads: int,
            address: str | None, code: dict[str, Any] | None = None) -> None:
    """Run every job without a result; cells start when their model is done. `code`: the
    identity a reused result must have (--rerun-stale)."""
    from tqdm import tqdm

    from eval.executors import make_executor

    pending_models = [j for j in models.values() if j.result is None]
    pending_cells = [j for j in cells if j.result is None]
    if not pending_models and not pending_cells:
        return
    executor = make_executor(executor_name, workers, address)
    running: dict[Any, Job] = {}
    watching: dict[str, Job] = {}  # folder name -> a job another process holds
    bar = tqdm(total=len(pending_models) + len(pending_cells), desc=f"sweep ({executor_name}, {workers} workers)",
               unit="job")

    def model_of(job: Job) -> dict[str, Any] | None:
        return models[job.needs].result if job.spec["kind"] == "cell" else None

    def start(job: Job) -> None:
        if locks.holder(job.folder) is not None:
            watching[job.folder.name] = job
            return
        inputs = {"model": model_of(job)} if job.spec["kind"] == "cell" else {}
        handle = executor.submit(run_job, job.spec, str(job.folder), threads, inputs, code, cpus=threads)
        running[handle] = job

    def finish(job: Job, result: dict[str, Any], where: str = "") -> None:
        job.result = result
        bar.update(1)
        bar.write(_describe(job) + where)
        if result.get("lock_taken_over") and not where:
            bar.write(f"  note: took over the lock of {job.folder.name} left by "
                      f"{locks.describe(result['lock_taken_over'])}, which is no longer running")
        if job.spec["kind"] == "model":
            release(job)

    def release(model: Job) -> None:
        for cell in pending_cells:
            if cell.needs == model.hash and cell.result is None:
                if model.result and model.result.get("status") == "ok":
                    start(cell)
                else:
                    cell.result = {"status": "failed", "error": f"its model job failed ({model.folder.name})"}
                    bar.update(1)

    def look_at_watched() -> None:
        for name, job in list(watching.items()):
            result, _ = check(job.folder)
            if result is not None and rejects(result, model_of(job), code) is None:
                del watching[name]
                finish(job, result, " (run by another process)")
            elif locks.holder(job.folder) is None:
                del watching[name]
                start(job)

    def status() -> str:
        # queued cells sit in `running` too, so only the models' training is described
        words = [progress(j) for j in running.values() if j.spec["kind"] == "model"]
        if watching:
            words.append(f"{len(watching)} held by other processes")
        return ", ".join(words)

    aborted = True
    restore = _on_sigterm()
    try:
        for job in pending_models:
            start(job)
        for model in models.values():
            if model.result is not None:
                release(model)
        while running or watching:
            timeout = WATCH_POLL_S if watching else 5
            done = executor.wait(list(running), timeout=timeout) if running else []
            if not running:
                time.sleep(timeout)
            bar.set_postfix_str(status(), refresh=True)
            for handle in done:
                job = running.pop(handle)
                try:
                    result = executor.result(handle)
                except Exception as exc:  # a worker died (out of memory, killed)
                    result = {"status": "failed", "error": f"worker lost: {type(exc).__name__}: {exc}"}
                if result.get("status") == "locked":  # taken by another process since `start` looked
                    watching[job.folder.name] = job
                else:
                    finish(job, result)
            look_at_watched()
        aborted = False
    finally:
        bar.close()
        executor.shutdown(abort=aborted, handles=list(running))
        restore()


def _on_sigterm():
    """Make SIGTERM raise `Terminated` in the driver (main thread only); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _state(job: Job, code: dict[str, Any]) -> str:
    owner = locks.holder(job.folder)
    if owner is not None:
        return f"locked by {locks.describe(owner)}"
    if job.result is not None:
        return "cached" if identity.same(job.result.get("identity"), code) else \
            f"cached, other code ({identity.label(job.result.get('identity'))})"
    return f"to run ({job.why})" if job.why else "to run"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eval.report import write_report

    start = time.time()
    config = load_config(args.config, out=args.out, check=False)
    code = identity.current()
    models, cells = plan(config)
    rerun_stale = getattr(args, "rerun_stale", False) and not args.report_only
    triage(models, cells, code if rerun_stale else None)
    workers = args.workers or config.workers or available_cores()
    threads = args.threads or config.threads or max(1, available_cores() // workers)
    todo = [j for j in [*models.values(), *cells] if j.result is None or j.result.get("status") != "ok"]
    if todo and not args.report_only:
        config.check()
    print(f"sweep {config.name}: {len(cells)} cells over {len(models)} models, {len(todo)} jobs to run "
          f"-> {config.out}")
    if args.dry_run:
        for job in [*models.values(), *cells]:
            print(f"  {job.folder.name}  {_state(job, code)}  {job.label}")
        return {"jobs": len(models) + len(cells), "to_run": len(todo)}
    for job in todo:
        if job.why:
            print(f"  {job.folder.name} runs again: {job.why}")
    config.out.mkdir(parents=True, exist_ok=True)
    _write_text(config.out / "sweep.yaml", yaml.safe_dump(config.resolved(), sort_keys=False))
    if not args.report_only:
        for job in todo:
            job.result = None  # failed jobs are tried again
        if todo:
            execute(models, cells, args.executor, workers, threads, args.address, code if rerun_stale else None)
    report = write_report(config, models, cells, {"executor": args.executor, "workers": workers, "threads": threads,
                                                  "wall_s": round(time.time() - start, 1)})
    failed = [j for j in cells if not j.result or j.result.get("status") != "ok"]
    print(f"results: {report['csv']}  {report['json']}")
    print(f"report:  {report['markdown']}  ({len(report['plots'])} plots)")
    if len(report["identities"]) > 1:
        print(f"note: these results come from {len(report['identities'])} versions of the code "
              "(report.md lists them); --rerun-stale reruns those not made by this one")
    if failed:
        print(f"{len(failed)} of {len(cells)} cells did not finish: {failed[0].label}: "
              f"{(failed[0].result or {}).get('error', 'not run')}")
    return report


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
