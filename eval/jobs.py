"""The two kinds of sweep job, each run in a hash-named folder through the commands' own code.

    model-<hash>/   train/ (python -m train), model.onnx + model.fp32.onnx (python -m export.to_onnx),
                    export.json
    cell-<hash>/    model.onnx (python -m passes.approximate, with the cell's --compensate) and
                    pass.json, or retrain/ (train.retrain.retrain_approx; a compensated cell then
                    runs the pass on the retrained int8 model); eval.json (python -m eval run)

Every folder also holds config.yaml (the job spec its hash is taken over), log.txt (the job's
stdout and stderr) and, once the job succeeded, result.json, written last and atomically:
a folder with result.json is done and is never run again; any other is (re)run, and an
interrupted training continues from its checkpoint. A failed job leaves failed.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from eval import axes

JOB_VERSION = 1  # bump when a job's recipe changes what it produces
#: options that change how a job reports, not what it produces: left out of its hash
UNHASHED = {"train": ("log_every", "eval_batch_size")}
RESULT = "result.json"
FAILED = "failed.json"


def model_spec(cell: dict[str, Any], dataset: str, train: dict, export: dict) -> dict[str, Any]:
    """What a cell's model job produces from: its train and export axes (`eval.axes`) and options."""
    return {"kind": "model", "version": JOB_VERSION, **axes.spec_of(cell, "model"), "dataset": dataset,
            "train": dict(train), "export": dict(export)}


def cell_spec(cell: dict[str, Any], model_hash: str, dataset: str, retrain: dict,
              evaluation: dict) -> dict[str, Any]:
    """What a cell job produces from: its model, its pass/retrain/eval axes and options (the
    retrain options only when it is retrained)."""
    spec = {"kind": "cell", "version": JOB_VERSION, "model": model_hash, **axes.spec_of(cell, "cell"),
            "dataset": dataset, "eval": dict(evaluation)}
    if cell["retrained"]:
        spec["retrain"] = dict(retrain)
    return spec


def job_hash(spec: dict[str, Any]) -> str:
    """The folder name's hash: `config_hash` of the spec without its `UNHASHED` options."""
    from eval.sweep_config import config_hash

    kept = {key: ({k: v for k, v in value.items() if k not in UNHASHED.get(key, ())} if isinstance(value, dict)
                  else value) for key, value in spec.items()}
    return config_hash(kept)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def cached(job_dir: str | Path) -> dict[str, Any] | None:
    path = Path(job_dir) / RESULT
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
    return None


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too: native libraries write
    there) to `path` while the job runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_model(spec: dict[str, Any], job_dir: Path, threads: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Train (resuming an interrupted run) and export one (arch, topology)."""
    from eval.sweep_config import to_argv
    from export import to_onnx
    from train.args import parse_args
    from train.run import run as train

    train_dir = job_dir / "train"
    if not (train_dir / "metrics.json").is_file():
        argv = ["--arch", spec["arch"], "--topology", spec["topology"], "--dataset", spec["dataset"],
                "--out", str(train_dir), "--no-progress", "--threads", str(threads),
                *to_argv("train", {**spec["train"], **axes.options(spec, "train")})]
        if (train_dir / "checkpoint.pt").is_file():
            argv.append("--resume")
        print("python -m train " + " ".join(argv), flush=True)
        train(parse_args(argv))
    metrics = json.loads((train_dir / "metrics.json").read_text())
    onnx_path = job_dir / "model.onnx"
    if not (job_dir / "export.json").is_file():
        argv = ["--checkpoint", str(train_dir), "--out", str(onnx_path), "--dataset", spec["dataset"],
                "--json", str(job_dir / "export.json"),
                *to_argv("export", {**spec["export"], **axes.options(spec, "export")})]
        print("python -m export.to_onnx " + " ".join(argv), flush=True)
        args = to_onnx.create_args_parser().parse_args(argv)
        to_onnx.validate(args)
        to_onnx.run(args)
    return {"train_dir": str(train_dir), "int8": str(onnx_path), "fp32": str(job_dir / "model.fp32.onnx"),
            "fp32_top1": metrics["test_acc"], "fp32_test_images": metrics["test_samples"],
            "train_steps": metrics["steps"], "train_wall_s": metrics["wall_time_s"], "params": metrics.get("params")}


def run_cell(spec: dict[str, Any], job_dir: Path, threads: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite (or retrain and rewrite) one model under one multiplier, then evaluate it (on the
    cell's backend)."""
    from eval import run_args
    from eval.run import run as evaluate
    from eval.sweep_config import to_argv

    model = inputs["model"]
    extra: dict[str, Any] = {}
    pass_options = [f"--{key}={value}" for key, value in axes.options(spec, "pass").items()]  # --compensate
    if not spec["retrained"]:
        approx = _run_pass(model["int8"], job_dir / "model.onnx", spec, pass_options)
    else:
        from train.retrain import retrain_approx

        options = {"eval_limit": spec["eval"].get("limit"), **spec["retrain"]}
        print(f"retrain_approx({model['train_dir']}, multiplier {spec['multiplier']}, {options})", flush=True)
        result = retrain_approx(checkpoint=model["train_dir"], plan={"multiplier": spec["multiplier"]},
                                out=job_dir / "retrain", dataset=spec["dataset"], int8_model=model["int8"],
                                progress=False, **options)
        approx = Path(result["approx_model"])
        extra = {"before_top1": result["before_top1"], "after_top1": result["after_top1"],
                 "retrain_steps": result["steps"], "retrain_wall_s": result["wall_time_s"]}
        if pass_options:  # compensated after retraining: the retrained int8 model, tuned, then rewritten
            approx = _run_pass(result["int8_model"], job_dir / "model.onnx", spec, pass_options)
    argv = [str(approx), "--dataset", spec["dataset"], "--json", str(job_dir / "eval.json"), "--no-progress",
            "--threads", str(threads), *to_argv("eval", {**spec["eval"], **axes.options(spec, "eval")})]
    print("python -m eval run " + " ".join(argv), flush=True)
    args = run_args.create_args_parser().parse_args(argv)
    run_args.validate(args)
    res = evaluate(args)
    power = res["power"]
    return {"model": str(approx), "eval": str(job_dir / "eval.json"), "top1": res["top1"], "top5": res["top5"],
            "images": res["images"], "normalised_power": res["normalised_power"],
            "weighted_macs_per_image": power["weighted_macs_per_image"],
            "active_macs_per_image": power["active_macs_per_image"],
            "dense_macs_per_image": power["dense_macs_per_image"], "latency": res["latency"],
            "expert_load": res["expert_load"], "agreement": res["agreement"], **extra}


def _run_pass(int8: str, out: Path, spec: dict[str, Any], options: list[str]) -> Path:
    """`python -m passes.approximate` on one int8 model under the cell's multiplier (and pass axes)."""
    from passes import approximate

    argv = [str(int8), str(out), "--multiplier", spec["multiplier"], *options,
            "--report", str(out.parent / "pass.json")]
    print("python -m passes.approximate " + " ".join(argv), flush=True)
    approximate.run(approximate.create_args_parser().parse_args(argv))
    return out


RUNNERS: dict[str, Callable[[dict, Path, int, dict], dict]] = {"model": run_model, "cell": run_cell}


def run_job(spec: dict[str, Any], job_dir: str, threads: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run one job in `job_dir` unless it is already done; returns its result, with "status"
    "ok" or "failed" (and "error")."""
    done = cached(job_dir)
    if done is not None:
        return done
    folder = Path(job_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(spec, sort_keys=True))
    (folder / FAILED).unlink(missing_ok=True)
    start = time.time()
    import torch

    torch.set_num_threads(threads)
    with output_to(folder / "log.txt"):
        print(f"== {spec['kind']} job {folder.name}, {threads} thread(s), pid {os.getpid()}", flush=True)
        try:
            result = {"status": "ok", **RUNNERS[spec["kind"]](spec, folder, threads, inputs)}
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            result = {"status": "failed", "error": f"{type(exc).__name__}: {message}"}
    result["wall_s"] = round(time.time() - start, 2)
    write_json(folder / (RESULT if result["status"] == "ok" else FAILED), result)
    return result
