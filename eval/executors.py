"""Where sweep jobs run: a local process pool or Ray tasks, behind one small interface.

    ex = make_executor("local", workers=2)     # or ("ray", workers=4, address="ray://host:10001")
    handle = ex.submit(fn, *args, cpus=1)      # fn: a module-level function (pickled by reference)
    done = ex.wait(handles, timeout=5)         # those finished (at least one, or none after timeout s)
    ex.result(done[0]); ex.shutdown()        # ex.shutdown(abort=True): stop running jobs now

Local workers exit when their driver dies, however it dies: on Linux the kernel sends them
SIGKILL (prctl PR_SET_PDEATHSIG, set in the worker initializer), and on every platform a
watchdog thread in each worker exits it once its parent pid changes (macOS has no
PR_SET_PDEATHSIG, so there it takes up to PARENT_POLL_S).

Ray tasks request `cpus` CPUs each, so a cluster runs as many at once as it has room for;
their job folders must be on a filesystem every node sees (one machine, or a shared mount).
A task whose worker or node is lost is retried (RAY_RETRIES; jobs are idempotent: they write
to temp files and rename, under the folder's lock); a task's own exception is not retried.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable

EXECUTORS = ("local", "ray")
#: environment the jobs read, handed to Ray workers (a cluster's workers do not inherit ours)
FORWARDED_ENV = ("AXMOE_DATA_DIR", "AXMOE_ORT_LIBRARY", "AXMOE_KERNEL", "AXMOE_PATH")


#: retries of a Ray task whose worker process or node died
RAY_RETRIES = 3
#: seconds between a worker's checks that its driver is alive
PARENT_POLL_S = 1.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ExecutorError(RuntimeError):
    pass


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: die with the driver `parent` (see module docstring)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    watch_parent(parent)  # also catches a driver that died before the prctl above


def watch_parent(parent: int) -> None:
    """Exit this process (at once, no cleanup: its job folder's lock goes with it) once its
    parent is no longer `parent`: the parent died and the process was re-parented."""
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="axmoe-parent-watch", daemon=True).start()


class LocalExecutor:
    """`workers` processes (spawned: no state shared with the driver, torch-safe), which exit
    when the driver does."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_exit_with_parent, initargs=(os.getpid(),))

    def submit(self, fn: Callable[..., Any], *args: Any, cpus: int = 1) -> Future:
        return self.pool.submit(fn, *args)

    def wait(self, handles: list[Future], timeout: float | None = None) -> list[Future]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Future) -> Any:
        return handle.result()

    def shutdown(self, abort: bool = False, handles: list[Future] = ()) -> None:
        """Wait for the running jobs (abort: kill the workers, and so their jobs and locks)."""
        if abort:
            for process in list((self.pool._processes or {}).values()):
                process.kill()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


class RayExecutor:
    """Ray tasks on the cluster at `address` (None: start a local instance of `workers` CPUs)."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'axmoe[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers,
                                                                          "include_dashboard": False}
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            ray.init(log_to_driver=False, runtime_env={"env_vars": env} if env else None, **kwargs)
        self.remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any, cpus: int = 1) -> Any:
        if fn not in self.remote:
            self.remote[fn] = self.ray.remote(fn)
        return self.remote[fn].options(num_cpus=cpus, max_retries=RAY_RETRIES, retry_exceptions=False).remote(*args)

    def wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return [h for h in handles if h in done]

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def shutdown(self, abort: bool = False, handles: list[Any] = ()) -> None:
        """Disconnect (abort: first cancel `handles`, the tasks still running)."""
        if abort:
            for handle in handles:
                self.ray.cancel(handle, force=True)
        if self.started:
            self.ray.shutdown()


def make_executor(name: str, workers: int, address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor `name` (EXECUTORS) running `workers` jobs at once."""
    if name == "local":
        if address:
            raise ExecutorError("--address applies to --executor ray only")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, address)
    raise ExecutorError(f"unknown executor {name!r} (valid: {', '.join(EXECUTORS)})")
