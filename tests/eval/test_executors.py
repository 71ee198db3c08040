"""Executors (`eval.executors`): a local worker does not outlive its driver, however the driver
dies; without that, a killed driver's workers kept writing into the job folders (issue 21)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = '''
import os, time
def sleep(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
'''
DRIVERS = {
    # the sweep's pool: PR_SET_PDEATHSIG and the parent watchdog
    "local": "from eval.executors import LocalExecutor as E; pool = E(1).pool",
    # the watchdog alone (what a worker has on macOS)
    "watchdog": "from concurrent.futures import ProcessPoolExecutor as P; import multiprocessing as mp; "
                "from eval.executors import watch_parent; "
                "pool = P(1, mp_context=mp.get_context('spawn'), initializer=watch_parent, initargs=(os.getpid(),))",
    # a plain pool, the control: its worker outlives the driver
    "plain": "from concurrent.futures import ProcessPoolExecutor as P; import multiprocessing as mp; "
             "pool = P(1, mp_context=mp.get_context('spawn'))",
}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_worker_dies_with_its_killed_driver(tmp_path, kind):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    pidfile = tmp_path / "worker.pid"
    code = (f"import os, sys, time; sys.path.insert(0, {str(tmp_path)!r}); import sleeper; {DRIVERS[kind]}; "
            f"pool.submit(sleeper.sleep, {str(pidfile)!r}); time.sleep(120)")
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (pidfile.is_file() and pidfile.read_text()):
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(pidfile.read_text())
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert alive(worker) == (kind == "plain")
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)

