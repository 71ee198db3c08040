"""Backends that run a model for `eval run`: a callable batch (N, 3, S, S) float32 -> logits.

- `ort`: onnxruntime with the axmoe custom-op library (`runtime.ort.session`).
- `tvm`: the TVM-compiled graph (`runtime.tvm.session(path, threads=N)`: compiled for this
  CPU once, cached). TVM is the optional extra `axmoe[tvm]`; without it this backend is a
  one-line BackendError that says what to install.

Routing and MAC counts are always read from an instrumented onnxruntime session of the same
integer graph (`eval.macs`); the backend gives accuracy and latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


class BackendError(RuntimeError):
    """A backend that cannot run here, said in one line."""


def ort_runner(model: str | Path | bytes, input_name: str, threads: int | None) -> Runner:
    from runtime.ort import session

    sess = session(model if isinstance(model, bytes) else str(model), threads=threads)
    output = sess.get_outputs()[0].name
    return lambda x: sess.run([output], {input_name: x})[0]


def tvm_runner(model: str | Path, input_name: str, threads: int | None) -> Runner:
    import runtime.tvm

    try:
        sess = runtime.tvm.session(str(model), threads=threads)
    except runtime.tvm.MissingTVMError as exc:
        raise BackendError(f"--backend tvm: {exc}") from None
    return sess.run


#: backend name -> runner factory (model, input name, threads); a new backend is one entry
BACKENDS: dict[str, Callable[[str | Path, str, int | None], Runner]] = {"ort": ort_runner, "tvm": tvm_runner}


def make_runner(backend: str, model: str | Path, input_name: str, threads: int | None) -> Runner:
    factory = BACKENDS.get(backend)
    if factory is None:
        raise BackendError(f"unknown backend {backend!r} (valid: {', '.join(BACKENDS)})")
    return factory(model, input_name, threads)
