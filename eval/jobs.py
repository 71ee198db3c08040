"""The two kinds of sweep job, each run in a hash-named folder through the commands' own code.

    model-<hash>/   train/ (python -m train), model.onnx + model.fp32.onnx (python -m export.to_onnx),
                    export.json
    cell-<hash>/    model.onnx (python -m passes.approximate, with the cell's --compensate) and
                    pass.json, or retrain/ (train.retrain.retrain_approx; a compensated cell then
                    runs the pass on the retrained int8 model); eval.json (python -m eval run)

Every folder also holds config.yaml (the job spec its hash is taken over), log.txt (the job's
stdout and stderr, one "== <kind> job" line per execution), lock (`eval.locks`: held by the
process working in the folder) and, once the job succeeded, result.json, written last and
atomically (temp file, then rename, so a retried job is idempotent). result.json records

    identity   the code that produced it (`eval.identity`)
    outputs    {path in the folder: sha256} of every file the job wrote (logs and specs aside)
    inputs     {"model": fingerprint of the model job's outputs}   (cells)

A folder whose result.json parses, says "ok" and whose outputs still match is done and is not
run again (`check`); an unreadable result.json, a missing or changed output, a cell whose model
job's outputs changed, or (`--rerun-stale`) a result from other code is rerun from an emptied
folder; a folder without result.json is (re)run in place, so an interrupted training continues
from its checkpoint. A failed job (a full disk included) leaves failed.json and a one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from eval import axes, identity, locks

JOB_VERSION = 1  # bump when a job's recipe changes what it produces
#: options that change how a job reports, not what it produces: left out of its hash
UNHASHED = {"train": ("log_every", "eval_batch_size")}
RESULT = "result.json"
FAILED = "failed.json"
LOG = "log.txt"
CONFIG = "config.yaml"
#: files of a job folder that are not its outputs (bookkeeping, logs, temp files of writes)
NOT_OUTPUTS = {RESULT, FAILED, LOG, CONFIG, locks.LOCK}
NOT_OUTPUT_SUFFIXES = (".tmp", ".jsonl")


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
    """Write `data` to `path` atomically (temp file, then rename); no temp file is left on failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def output_digests(job_dir: str | Path) -> dict[str, str]:
    """{path relative to the folder: sha256} of every output file of a job folder."""
    folder = Path(job_dir)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in NOT_OUTPUTS and not path.name.endswith(NOT_OUTPUT_SUFFIXES):
            out[rel] = identity.file_sha256(path)
    return out


def fingerprint(result: dict[str, Any] | None) -> str | None:
    """16 hex digits of sha256 over a result's output digests (None: a result without them)."""
    outputs = (result or {}).get("outputs")
    if outputs is None:
        return None
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:16]


def check(job_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a finished job whose outputs match result.json; (None, why) for a
    folder whose result.json cannot be used; (None, None) for one without result.json."""
    folder = Path(job_dir)
    try:
        text = (folder / RESULT).read_text()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{RESULT} unreadable ({exc.strerror})"
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        return None, f"{RESULT} is not valid JSON (truncated or corrupt)"
    if not isinstance(result, dict) or result.get("status") != "ok":
        return None, f"{RESULT} is not an ok result"
    for rel, digest in (result.get("outputs") or {}).items():
        path = folder / rel
        if not path.is_file():
            return None, f"{rel} is missing"
        if identity.file_sha256(path) != digest:
            return None, f"{rel} does not match the sha256 in {RESULT}"
    return result, None


def cached(job_dir: str | Path) -> dict[str, Any] | None:
    """The result of a finished job whose outputs match (`check`), else None."""
    return check(job_dir)[0]


def rejects(result: dict[str, Any], model: dict[str, Any] | None = None,
            code: dict[str, Any] | None = None) -> str | None:
    """Why a valid result must not be reused: a cell whose `model` job result is not the one it
    was made from, or (`code` given: --rerun-stale) a result made by other code; None: reuse it."""
    if model is not None and (result.get("inputs") or {}).get("model") != fingerprint(model):
        return "its model job's outputs changed"
    if code is not None and not identity.same(result.get("identity"), code):
        return f"made by other code ({identity.label(result.get('identity'))})"
    return None


def clear(job_dir: Path) -> None:
    """Empty a job folder for a fresh run, keeping its lock and its log."""
    for path in job_dir.iterdir():
        if path.name in (locks.LOCK, LOG):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too: native libraries write
    there; and sys.stdout/sys.stderr, which need not be those descriptors) to `path` while
    the job runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
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


def _reason(exc: BaseException) -> str:
    """One line for a failed job."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"disk full (ENOSPC) writing {exc.filename}" if exc.filename else "disk full (ENOSPC)"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def run_job(spec: dict[str, Any], job_dir: str, threads: int, inputs: dict[str, Any],
            code: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one job in `job_dir` unless it is done; returns its result, with "status" "ok" or
    "failed" (and "error"), or "locked" (and "owner") while another process works there.

    Under the folder's lock: a valid result (`check`) that `rejects` nothing (`code`: the
    identity --rerun-stale requires; a cell's model: inputs["model"]) is returned as it is;
    any other result.json is removed with the rest of the folder and the job runs fresh."""
    folder = Path(job_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = locks.try_lock(folder, wait=0.5)
    if lock is None:
        return {"status": "locked", "owner": locks.holder(folder)}
    try:
        return _run_locked(spec, folder, threads, inputs, code, lock)
    finally:
        lock.release()


def _run_locked(spec: dict[str, Any], folder: Path, threads: int, inputs: dict[str, Any],
                code: dict[str, Any] | None, lock: locks.JobLock) -> dict[str, Any]:
    model = inputs.get("model") if spec["kind"] == "cell" else None
    done, why = check(folder)
    if done is not None:
        why = rejects(done, model, code)
        if why is None:
            return done
    if why is not None:
        clear(folder)
    start = time.time()
    notes: dict[str, Any] = {"identity": identity.current()}  # the code this process imported, as it starts
    try:  # a full disk may refuse any write below, the log's included: the job fails, the sweep goes on
        (folder / CONFIG).write_text(yaml.safe_dump(spec, sort_keys=True))
        (folder / FAILED).unlink(missing_ok=True)
        import torch

        torch.set_num_threads(threads)
        with output_to(folder / LOG):
            try:
                print(f"== {spec['kind']} job {folder.name}, {threads} thread(s), pid {os.getpid()} on "
                      f"{socket.gethostname()}", flush=True)
                if lock.previous is not None:
                    notes["lock_taken_over"] = lock.previous
                    print(f"taking over the lock of {folder.name} left by {locks.describe(lock.previous)}, "
                          "which is no longer running", flush=True)
                if why is not None:
                    notes["rerun_because"] = why
                    print(f"rerunning from an emptied folder: {why}", flush=True)
                result = {"status": "ok", **RUNNERS[spec["kind"]](spec, folder, threads, inputs)}
            except (Exception, SystemExit) as exc:
                with contextlib.suppress(OSError):
                    traceback.print_exc()
                result = {"status": "failed", "error": _reason(exc)}
    except OSError as exc:
        result = {"status": "failed", "error": _reason(exc)}
    result.update(wall_s=round(time.time() - start, 2), **notes)
    if model is not None:
        result["inputs"] = {"model": fingerprint(model)}
    if result["status"] == "ok":
        try:
            result["outputs"] = output_digests(folder)
            write_json(folder / RESULT, result)
            return result
        except OSError as exc:
            result = {**result, "status": "failed", "error": _reason(exc)}
            result.pop("outputs", None)
    with contextlib.suppress(OSError):  # the failure is returned even when it cannot be written
        write_json(folder / FAILED, result)
    return result
