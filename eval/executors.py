"""Where sweep jobs run: a local process pool or Ray tasks, behind one small interface.

    ex = make_executor("local", workers=2)     # or ("ray", workers=4, address="ray://host:10001")
    handle = ex.submit(fn, *args, cpus=1)      # fn: a module-level function (pickled by reference)
    done = ex.wait(handles, timeout=5)         # those finished (at least one, or none after timeout s)
    ex.result(done[0]); ex.shutdown()

Ray tasks request `cpus` CPUs each, so a cluster runs as many at once as it has room for;
their job folders must be on a filesystem every node sees (one machine, or a shared mount).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable

EXECUTORS = ("local", "ray")
#: environment the jobs read, handed to Ray workers (a cluster's workers do not inherit ours)
FORWARDED_ENV = ("AXMOE_DATA_DIR", "AXMOE_ORT_LIBRARY", "AXMOE_KERNEL", "AXMOE_PATH")


class ExecutorError(RuntimeError):
    pass


class LocalExecutor:
    """`workers` processes (spawned: no state shared with the driver, torch-safe)."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn: Callable[..., Any], *args: Any, cpus: int = 1) -> Future:
        return self.pool.submit(fn, *args)

    def wait(self, handles: list[Future], timeout: float | None = None) -> list[Future]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Future) -> Any:
        return handle.result()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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
        return self.remote[fn].options(num_cpus=cpus, max_retries=0).remote(*args)

    def wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return [h for h in handles if h in done]

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def shutdown(self) -> None:
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
