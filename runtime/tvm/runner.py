"""Run a TVM-compiled axmoe model: load a library (or compile an ONNX model once, cached),
feed one numpy batch, get the first graph output.

    sess = open_session("model.onnx", threads=2)   # compiled for this CPU, cached in .cache/tvm
    y = sess.run(x)                                 # x [N, ...] as the model's input dtype

Cache: an ONNX model compiles to `<cache>/<key>.so` (+ `.so.json`), key = sha256 of the model
bytes, the target, the kernel form, the batch and the backend version (TVM's, onnxruntime's
and this package's sources), so a second session of the same model loads in well under a second.
`<cache>` is $AXMOE_TVM_CACHE, else `.cache/tvm` in the repository.

Threads: TVM's pool is sized once per process from TVM_NUM_THREADS (set to all CPUs when
`runtime.tvm` is imported, TVM's own default being half of them); a session with `threads`
resizes it (`runtime.config_threadpool`) before each run that needs another size.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from runtime.tvm.config import require_tvm

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(Path(__file__).parent.glob("*.py"))


class SessionError(ValueError):
    """A library or model that cannot be opened or fed (said in one line)."""


def sidecar(path: str | Path) -> Path:
    """The metadata file written beside a library: LIB.so -> LIB.so.json. (Here, not in
    `build`: running a library on a board needs only TVM's runtime and numpy, not onnx.)"""
    return Path(str(path) + ".json")


def cache_dir() -> Path:
    return Path(os.environ.get("AXMOE_TVM_CACHE") or ROOT / ".cache" / "tvm")


def _backend_version() -> str:
    import onnxruntime
    import tvm

    # onnxruntime's version too: its graph optimizer decides the fused ops (`ort_fusions`)
    digest = hashlib.sha256(f"{tvm.__version__} {onnxruntime.__version__}".encode())
    for source in SOURCES:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(model_bytes: bytes, target: dict, kernel: str, batch: int | None) -> str:
    digest = hashlib.sha256(model_bytes)
    digest.update(json.dumps({"target": target, "kernel": kernel, "batch": batch,
                              "backend": _backend_version()}, sort_keys=True).encode())
    return digest.hexdigest()


def load_onnx_bytes(path: Path):
    """The model (onnx.ModelProto) of an ONNX file, or SessionError."""
    import onnx

    try:
        return onnx.load_model_from_string(path.read_bytes())
    except Exception:  # protobuf raises DecodeError, or anything on garbage
        raise SessionError(f"{path}: not an ONNX model") from None


def compile_cached(path: Path, target="host", kernel: str = "auto", batch: int | None = None) -> Path:
    """The library of ONNX model `path` for `target`, compiled unless cached."""
    from runtime.tvm import build

    data = path.read_bytes()
    model = load_onnx_bytes(path)
    resolved = build.resolve_target(target)
    library = cache_dir() / f"{cache_key(data, build.target_config(resolved), kernel, batch)}.so"
    if library.exists() and sidecar(library).exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    executable = build.compile_model(model, resolved, batch=batch, kernel=kernel)
    # written under a temporary name and renamed, so concurrent sessions never load half a file
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
        staged = Path(tmp) / library.name
        build.export(executable, staged, resolved,
                     {**build.signature(model, batch), "kernel": kernel, "source": path.name})
        os.replace(sidecar(staged), sidecar(library))
        os.replace(staged, library)
    return library


class Session:
    """A loaded library: `run(x)` -> the first output as numpy.

    Args:
        library: a .so exported by `runtime.tvm.export` with its `.so.json` beside it.
        threads: TVM runtime threads for `run` (None: the pool as it is).
    """

    def __init__(self, library: str | Path, threads: int | None = None):
        require_tvm()
        import tvm
        from tvm import relax

        library = Path(library)
        meta_path = sidecar(library)
        if not meta_path.is_file():
            raise SessionError(f"{library}: no {meta_path.name} beside it "
                               "(build it with python -m runtime.tvm compile)")
        self.meta = json.loads(meta_path.read_text())
        self.input = self.meta["input"]
        if threads is not None and threads < 1:
            raise SessionError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        try:
            module = tvm.runtime.load_module(str(library))
        except Exception as exc:
            raise SessionError(f"{library}: cannot load ({str(exc).strip().splitlines()[-1]})") from None
        self._vm = relax.VirtualMachine(module, tvm.cpu())
        self._main = self._vm["main"]
        self._tensor = tvm.runtime.tensor
        self._config = tvm.get_global_func("runtime.config_threadpool")
        self._num_threads = tvm.get_global_func("runtime.NumThreads")

    def check(self, x) -> np.ndarray:
        """x as the model's input dtype, contiguous, its shape checked against the library's."""
        x = np.ascontiguousarray(x, dtype=self.input["dtype"])
        shape = self.input["shape"]
        if x.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, x.shape)):
            want = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
            raise SessionError(f"input {self.input['name']!r} must have shape {want}, got {list(x.shape)}")
        return x

    def run(self, x) -> np.ndarray:
        """First graph output for the batch `x` (see `check`)."""
        x = self.check(x)
        if self.threads is not None and self._num_threads() != self.threads:
            self._config(1, self.threads)  # 1: kBig, i.e. all cores when they are alike
        out = self._main(self._tensor(x))
        if not hasattr(out, "numpy"):
            out = out[0]
        return out.numpy()

    __call__ = run


def open_session(path: str | Path, threads: int | None = None, kernel: str = "auto",
                 batch: int | None = None, target="host") -> Session:
    """A Session of a library (`.so`) or of an ONNX model (compiled for `target`, cached)."""
    path = Path(path)
    if not path.is_file():
        raise SessionError(f"{path}: no such file")
    if path.suffix != ".so":
        path = compile_cached(path, target=target, kernel=kernel, batch=batch)
    return Session(path, threads=threads)
