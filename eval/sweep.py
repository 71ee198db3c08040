"""`python -m eval sweep CONFIG.yaml`: `run(args)` plans the jobs, runs those not cached, and
renders the report.

Jobs form a two-level graph: one model job per value of the train/export axes (arch,
topology: `eval.axes`), and one cell job per cell (those and the multiplier, retrained and
backend axes) that starts as soon as its model is ready. Cached jobs (their folder holds
result.json) are not submitted, so a finished sweep starts no worker at all and only
re-renders.

    OUT/jobs/model-<hash>/, OUT/jobs/cell-<hash>/    (eval.jobs)
    OUT/sweep.yaml                                   the resolved config
    OUT/results.csv, OUT/results.json                one row per cell (eval.report)
    OUT/report/report.md + *.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eval import axes
from eval.jobs import cached, cell_spec, job_hash, model_spec, run_job
from eval.sweep_config import SweepConfig, load_config


@dataclass
class Job:
    spec: dict[str, Any]
    folder: Path
    label: str
    needs: str | None = None                # hash of the model job a cell needs
    result: dict[str, Any] | None = None
    cell: dict[str, Any] = field(default_factory=dict)  # {axis name: value} (eval.axes)

    @property
    def hash(self) -> str:
        return self.folder.name.split("-", 1)[1]


def plan(config: SweepConfig) -> tuple[dict[str, Job], list[Job]]:
    """Model jobs by hash, and the cell jobs in report order."""
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
        job.result = cached(job.folder)
    return models, cells


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
            address: str | None) -> None:
    """Run every job without a result; cells start when their model is done."""
    from tqdm import tqdm

    from eval.executors import make_executor

    pending_models = [j for j in models.values() if j.result is None]
    pending_cells = [j for j in cells if j.result is None]
    if not pending_models and not pending_cells:
        return
    executor = make_executor(executor_name, workers, address)
    running: dict[Any, Job] = {}
    bar = tqdm(total=len(pending_models) + len(pending_cells), desc=f"sweep ({executor_name}, {workers} workers)",
               unit="job")

    def submit(job: Job, inputs: dict[str, Any]) -> None:
        handle = executor.submit(run_job, job.spec, str(job.folder), threads, inputs, cpus=threads)
        running[handle] = job

    def release(model: Job) -> None:
        for cell in pending_cells:
            if cell.needs == model.hash and cell.result is None:
                if model.result and model.result.get("status") == "ok":
                    submit(cell, {"model": model.result})
                else:
                    cell.result = {"status": "failed", "error": f"its model job failed ({model.folder.name})"}
                    bar.update(1)

    try:
        for job in pending_models:
            submit(job, {})
        for model in models.values():
            if model.result is not None:
                release(model)
        while running:
            done = executor.wait(list(running), timeout=5)
            # queued cells sit in `running` too, so only the models' training is described
            bar.set_postfix_str(", ".join(progress(j) for j in running.values() if j.spec["kind"] == "model"),
                                refresh=True)
            for handle in done:
                job = running.pop(handle)
                try:
                    job.result = executor.result(handle)
                except Exception as exc:  # a worker died (out of memory, killed)
                    job.result = {"status": "failed", "error": f"worker lost: {type(exc).__name__}: {exc}"}
                bar.update(1)
                bar.write(_describe(job))
                if job.spec["kind"] == "model":
                    release(job)
    finally:
        bar.close()
        executor.shutdown()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eval.report import write_report

    start = time.time()
    config = load_config(args.config, out=args.out, check=False)
    models, cells = plan(config)
    workers = args.workers or config.workers or available_cores()
    threads = args.threads or config.threads or max(1, available_cores() // workers)
    todo = [j for j in [*models.values(), *cells] if j.result is None or j.result.get("status") != "ok"]
    if todo and not args.report_only:
        config.check()
    print(f"sweep {config.name}: {len(cells)} cells over {len(models)} models, {len(todo)} jobs to run "
          f"-> {config.out}")
    if args.dry_run:
        for job in [*models.values(), *cells]:
            state = "cached" if job.result and job.result.get("status") == "ok" else "to run"
            print(f"  {job.folder.name}  {state:7s}  {job.label}")
        return {"jobs": len(models) + len(cells), "to_run": len(todo)}
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "sweep.yaml").write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
    if not args.report_only:
        for job in todo:
            job.result = None  # failed jobs are tried again
        if todo:
            execute(models, cells, args.executor, workers, threads, args.address)
    report = write_report(config, models, cells, {"executor": args.executor, "workers": workers, "threads": threads,
                                                  "wall_s": round(time.time() - start, 1)})
    failed = [j for j in cells if not j.result or j.result.get("status") != "ok"]
    print(f"results: {report['csv']}  {report['json']}")
    print(f"report:  {report['markdown']}  ({len(report['plots'])} plots)")
    if failed:
        print(f"{len(failed)} of {len(cells)} cells did not finish: {failed[0].label}: "
              f"{(failed[0].result or {}).get('error', 'not run')}")
    return report
