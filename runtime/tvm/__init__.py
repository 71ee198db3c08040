"""TVM backend: axmoe ONNX models (QDQ int8 graphs with the approximate ops, either lowering)
imported into Relax, lowered to TIR and compiled to a standalone library for x86 or aarch64.

    sess = session("model.onnx", threads=2)     # compiled for this CPU once, cached under .cache/tvm
    logits = sess.run(x)                         # x float32 [N, 3, H, W] -> first graph output
    sess = session("model.so")                   # a library from `python -m runtime.tvm compile`

    executable = compile_model(onnx.load("model.onnx"), "aarch64", batch=1)
    export(executable, "model.so", "aarch64")    # + model.so.json: what `run` needs to feed it

Outputs equal onnxruntime's bit for bit on the integer paths (same integer products, same
fused ops as onnxruntime runs, same elementwise float rounding: see `ort_fusions`, `fp_exact`).
Modules: `config` (`LoweringConfig`, the check that TVM is installed), `frontend` (ONNX ->
Relax, the project's converters on top of TVM's), `ort_fusions` (onnxruntime's fused nodes put
into the model), `converters`, `contrib_ops` (onnxruntime's fused ops), `kernels` / `vnni` /
`schedule` / `generic` (TE computes and CPU schedules), `fp_exact`, `build` (targets,
pipeline, export), `runner` (load, cache, run), `cli`.

TVM is imported on first use, so `import runtime.tvm` is cheap and works without it. TVM is
the optional extra `axmoe[tvm]` (apache-tvm): without it every function here raises
`MissingTVMError`, whose message says what to install.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from runtime.tvm.config import MissingTVMError, require_tvm

# TVM sizes its thread pool once, from TVM_NUM_THREADS, else half the logical CPUs (it assumes
# two hardware threads per core: one thread on a 2-vCPU machine); `session(threads=)` can only
# shrink it, so start from all of them.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

if TYPE_CHECKING:  # pragma: no cover
    from runtime.tvm.runner import Session

__all__ = ["MissingTVMError", "compile_model", "export", "from_onnx", "session", "Session"]


def from_onnx(model, batch=None, kernel="auto"):
    """Relax IRModule of an ONNX model (see `runtime.tvm.frontend.from_onnx`)."""
    require_tvm()
    from runtime.tvm.frontend import from_onnx as _from_onnx

    return _from_onnx(model, batch=batch, kernel=kernel)


def compile_model(model, target="host", batch=None, kernel="auto"):
    """`tvm.runtime.Executable` of an ONNX model (see `runtime.tvm.build.compile_model`)."""
    require_tvm()
    from runtime.tvm.build import compile_model as _compile_model

    return _compile_model(model, target=target, batch=batch, kernel=kernel)


def export(executable, path, target="host", metadata=None):
    """Write the deployable library (and its metadata sidecar; see `runtime.tvm.build.export`)."""
    require_tvm()
    from runtime.tvm.build import export as _export

    return _export(executable, path, target=target, metadata=metadata)


def session(path, threads: int | None = None, kernel: str = "auto", batch: int | None = None,
            target="host") -> "Session":
    """A runnable model: `path` is an .onnx model (compiled for `target`, by default this CPU,
    and cached) or a library built by `python -m runtime.tvm compile` (see
    `runtime.tvm.runner.Session`)."""
    require_tvm()
    from runtime.tvm.runner import open_session

    return open_session(path, threads=threads, kernel=kernel, batch=batch, target=target)


def __getattr__(name):
    if name == "Session":
        from runtime.tvm.runner import Session

        return Session
    raise AttributeError(f"module 'runtime.tvm' has no attribute {name!r}")
