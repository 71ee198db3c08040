"""Job folders (`eval.jobs`, `eval.locks`, `eval.identity`): the lock, the checks that keep a
corrupt or stale result from being reported, and the code identity a result records."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval import identity, jobs, locks

ROOT = Path(__file__).resolve().parents[2]


def test_a_lock_is_exclusive_and_names_its_owner(tmp_path):
    lock = locks.try_lock(tmp_path)
    assert lock is not None and lock.previous is None
    owner = locks.holder(tmp_path)
    assert owner["pid"] == os.getpid() and owner["host"] == os.uname().nodename
    assert locks.try_lock(tmp_path, wait=0.1) is None
    lock.release()
    assert locks.holder(tmp_path) is None
    again = locks.try_lock(tmp_path)
    assert again.previous is None  # released cleanly: nothing to take over
    again.release()


def test_the_lock_of_a_dead_owner_is_taken_over(tmp_path):
    code = ("import sys, time; from eval import locks; lock = locks.try_lock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert locks.holder(tmp_path)["pid"] == proc.pid
        assert locks.try_lock(tmp_path, wait=0.2) is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert locks.holder(tmp_path) is None  # the kernel dropped it with its owner
    lock = locks.try_lock(tmp_path)
    assert lock.previous["pid"] == proc.pid
    assert locks.describe(lock.previous).startswith(f"pid {proc.pid} on host ")
    lock.release()


def test_run_job_leaves_a_locked_folder_alone(tmp_path):
    lock = locks.try_lock(tmp_path)
    try:
        result = jobs.run_job({"kind": "model"}, str(tmp_path), 1, {})
    finally:
        lock.release()
    assert result == {"status": "locked", "owner": {**result["owner"], "pid": os.getpid()}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [locks.LOCK]


def finished(folder: Path, **extra) -> dict:
    (folder / "train").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    (folder / "train" / "checkpoint.pt").write_bytes(b"weights")
    for name in ("log.txt", "config.yaml", "failed.json", "train/log.jsonl", "model.onnx.tmp", locks.LOCK):
        (folder / name).write_text("not an output")
    result = {"status": "ok", "top1": 0.5, "outputs": jobs.output_digests(folder), **extra}
    jobs.write_json(folder / jobs.RESULT, result)
    return result


def test_result_records_the_sha256_of_every_output(tmp_path):
    result = finished(tmp_path)
    assert result["outputs"] == {"model.onnx": hashlib.sha256(b"onnx bytes").hexdigest(),
                                 "train/checkpoint.pt": hashlib.sha256(b"weights").hexdigest()}
    assert jobs.check(tmp_path) == (result, None)
    (tmp_path / "log.txt").write_text("more log")  # not an output: still valid
    assert jobs.cached(tmp_path) == result


@pytest.mark.parametrize("damage, why", [
    (lambda f: (f / jobs.RESULT).write_text((f / jobs.RESULT).read_text()[:40]),
     "result.json is not valid JSON (truncated or corrupt)"),
    (lambda f: (f / "model.onnx").write_bytes(b"onnx bytez"), "model.onnx does not match the sha256 in result.json"),
    (lambda f: (f / "train" / "checkpoint.pt").write_bytes(b""),
     "train/checkpoint.pt does not match the sha256 in result.json"),
    (lambda f: (f / "train" / "checkpoint.pt").unlink(), "train/checkpoint.pt is missing"),
    (lambda f: (f / jobs.RESULT).write_text('{"status": "failed"}'), "result.json is not an ok result"),
])
def test_a_damaged_folder_is_not_a_result(tmp_path, damage, why):
    finished(tmp_path)
    damage(tmp_path)
    assert jobs.check(tmp_path) == (None, why) and jobs.cached(tmp_path) is None


def test_results_from_before_output_digests_are_still_used(tmp_path):
    (tmp_path / jobs.RESULT).write_text(json.dumps({"status": "ok", "top1": 0.5}))
    assert jobs.check(tmp_path) == ({"status": "ok", "top1": 0.5}, None)
    assert jobs.check(tmp_path / "none") == (None, None)


def test_rejects_a_cell_of_another_model_and_other_code(tmp_path):
    model = {"status": "ok", "outputs": {"model.onnx": "1" * 64}}
    code = {"version": "0.1.0", "commit": "c" * 40, "dirty": False, "diff": None, "library": "l" * 64}
    cell = {"status": "ok", "inputs": {"model": jobs.fingerprint(model)}, "identity": code}
    assert jobs.rejects(cell, model) is None and jobs.rejects(cell, model, code) is None
    changed = {"status": "ok", "outputs": {"model.onnx": "2" * 64}}
    assert jobs.rejects(cell, changed) == "its model job's outputs changed"
    other = {**code, "library": "m" * 64}
    assert jobs.rejects(cell, model, other) == f"made by other code ({identity.label(code)})"
    assert jobs.rejects({"status": "ok"}, None, code) == "made by other code (unknown)"


def test_clear_keeps_the_lock_and_the_log(tmp_path):
    finished(tmp_path)
    jobs.clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [locks.LOCK, "log.txt"]


def test_write_json_leaves_no_temp_file_when_the_disk_is_full(tmp_path, monkeypatch):
    def full(self, text):
        Path.write_bytes(self, text[:3].encode())
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        jobs.write_json(tmp_path / "result.json", {"status": "ok"})
    assert list(tmp_path.iterdir()) == []
    assert jobs._reason(OSError(28, "No space left on device", "/x/result.json.tmp")) == \
        "disk full (ENOSPC) writing /x/result.json.tmp"


def test_code_identity_of_this_checkout():
    from runtime.ort import library_path

    code = identity.code_identity()
    assert list(code) == list(identity.FIELDS)
    assert code["library"] == hashlib.sha256(library_path().read_bytes()).hexdigest()
    from importlib import metadata
    assert code["version"] == metadata.version("axmoe")
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert code["commit"] == head.stdout.strip() and isinstance(code["dirty"], bool)
    assert identity.current() is identity.current()


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_git_state_commit_dirty_and_diff(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert identity.git_state(repo) == {"commit": head, "dirty": False, "diff": None}
    (repo / "a.py").write_text("x = 2\n")
    first = identity.git_state(repo)
    assert first["commit"] == head and first["dirty"] is True and len(first["diff"]) == 12
    (repo / "b.py").write_text("y = 1\n")  # an untracked file is a change too
    second = identity.git_state(repo)
    assert second["dirty"] is True and second["diff"] != first["diff"]
    (repo / "sub").mkdir()  # a package inside someone else's repository does not take its commit
    assert identity.git_state(repo / "sub") == {"commit": "unknown", "dirty": None, "diff": None}


def test_identity_is_unknown_without_git_or_library(tmp_path, monkeypatch):
    assert identity.git_state(tmp_path) == {"commit": "unknown", "dirty": None, "diff": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert identity.git_state(ROOT) == {"commit": "unknown", "dirty": None, "diff": None}
    monkeypatch.setenv("AXMOE_ORT_LIBRARY", str(tmp_path / "missing.so"))
    code = identity.code_identity()
    assert code["library"] == "unknown" and code["commit"] == "unknown"
    assert identity.label(code) == f"{code['version']} commit unknown lib unknown"
    assert not identity.same(code, None) and identity.same(code, dict(code))


def test_killed_owner_then_a_takeover_line_in_the_job_log(tmp_path):
    """A job started in a folder whose lock a dead process left says so in its log and result."""
    code = "import sys; from eval import locks; locks.try_lock(sys.argv[1]); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=True)
    start = time.time()
    result = jobs.run_job({"kind": "nonesuch"}, str(tmp_path), 1, {})
    assert time.time() - start < 60
    assert result["status"] == "failed" and result["error"] == "KeyError: 'nonesuch'"
    assert result["lock_taken_over"]["pid"] != os.getpid()
    log = (tmp_path / "log.txt").read_text()
    assert "== nonesuch job" in log and "taking over the lock of" in log and "which is no longer running" in log
    assert json.loads((tmp_path / jobs.FAILED).read_text())["error"] == "KeyError: 'nonesuch'"
    assert locks.holder(tmp_path) is None
