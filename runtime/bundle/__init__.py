"""Deployment bundles: one folder with everything a device needs to run an approximate model.

    python -m runtime.bundle APPROX.onnx --target host|aarch64 [--backend ort] --out DIR
                             [--results RESULTS.json]

DIR holds, and nothing else:

    model.onnx            the model, unchanged
    libaxmoe_ort.so       the custom-op library built for the target; only when the model has
                          axmoe ops (a "decomposed" lowering is standard ops and needs none)
    axmoe_run             C++ runner for the target (onnxruntime C/C++ API): .npy in, .npy out,
                          latency percentiles (runtime/bundle/csrc/runner.cc)
    libonnxruntime.so.1   the target's onnxruntime (PyPI wheel), found by the runner's rpath
    run.py                the same with Python: needs only `pip install onnxruntime numpy`
    manifest.json         multiplier and LUT sha256 per node, the plan, the accuracy and
                          normalised power `eval run --json` measured (--results), and the
                          sha256 of every other file ("files")
    README.md             how to run it

Both runners check every file against the manifest's sha256 before loading anything, so a
corrupted or swapped library stops the run with one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from modelfile import metadata, ops
from runtime.bundle import toolchain

FORMAT = "axmoe-bundle 1"
MODEL = "model.onnx"
LIBRARY = "libaxmoe_ort.so"
RUNNER = "axmoe_run"
PY_RUNNER = "run.py"
MANIFEST = "manifest.json"
README = "README.md"
BACKENDS = ("ort",)
#: Op domains onnxruntime's CPU provider runs itself (no library needed).
BUILTIN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
#: What `eval run --json` measured that the manifest keeps (eval/evaluate.py's result keys).
RESULT_KEYS = ("top1", "top5", "dataset", "images", "backend", "threads", "normalised_power", "agreement")


class BundleError(ValueError):
    """A model, target or bundle problem, said in one line."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def custom_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """{domain: sorted op types} of the nodes onnxruntime does not run by itself."""
    found: dict[str, set[str]] = {}
    for node in model.graph.node:
        if node.domain not in BUILTIN_DOMAINS:
            found.setdefault(node.domain, set()).add(node.op_type)
    return {d: sorted(t) for d, t in sorted(found.items())}


def _multipliers(assignment: dict[str, Any]) -> tuple[dict, dict]:
    import multipliers

    nodes, tables = {}, {}
    for node, entry in sorted(assignment.items()):
        name = entry["multiplier"]
        if name not in tables:
            m = multipliers.get(name)
            tables[name] = {"kind": m.kind, "lut_sha256": m.sha256, "power_mW": m.power_mW}
        nodes[node] = {"multiplier": name, "lowering": entry.get("lowering"), "lut_sha256": tables[name]["lut_sha256"]}
    return nodes, tables


def _results(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"--results {path}: not a readable JSON file ({e.__class__.__name__})") from None
    if not isinstance(result, dict) or "top1" not in result:
        raise BundleError(f"--results {path}: not the output of `python -m eval run --json` (no top1)")
    return {k: result.get(k) for k in RESULT_KEYS}


def _readme(manifest: dict[str, Any]) -> str:
    target, lib = manifest["target"], manifest["library"]
    qemu = "qemu-aarch64 -L SYSROOT " if target == "aarch64" else ""
    lines = [
        f"# axmoe bundle: {manifest['source']['name']} for {target} (onnxruntime {manifest['onnxruntime']})",
        "",
        f"Multiplier plan: `{json.dumps(manifest['plan'])}`; custom-op library: "
        f"{'`' + lib + '`' if lib else 'none (standard onnxruntime ops only)'}.",
        "",
        "Copy the whole folder to the device, then:",
        "",
        "```",
        f"./{RUNNER} . --input x.npy --output y.npy --runs 50      # C++ runner, prints latency percentiles",
        f"python3 {PY_RUNNER} --input x.npy --output y.npy          # pip install onnxruntime numpy",
        "```",
        "",
        f"`x.npy`: the model's input (float32, {manifest['input']}). Runner options: `--threads N`, "
        "`--warmup N`, `--kernel auto|scalar|neon|avx2|avx512`, `--path auto|lut|decomposed`.",
        "Both runners check every file against `manifest.json` (sha256) before loading, and stop with one",
        "line naming a corrupted or replaced file.",
    ]
    if qemu:
        lines += ["", f"Without a board: `{qemu}./{RUNNER} . --input x.npy` (correctness only; "
                  "qemu timings say nothing about a real Cortex-A72/A76)."]
    return "\n".join(lines) + "\n"


def build(model_path: str | Path, target: str, out: str | Path, backend: str = "ort",
          results: str | Path | None = None) -> dict[str, Any]:
    """Write the bundle of `model_path` for `target` into `out` (created; must be empty or absent).

    Returns the manifest. Raises BundleError (one line) for a model the target cannot run, e.g.
    a custom-op domain without a library, or a missing cross toolchain.
    """
    model_path, out = Path(model_path), Path(out)
    if backend not in BACKENDS:
        raise BundleError(f"--backend {backend}: bundles are built for {', '.join(BACKENDS)} only")
    try:
        toolchain.check_target(target)
    except toolchain.ToolchainError as e:
        raise BundleError(str(e)) from None
    if not model_path.is_file():
        raise BundleError(f"{model_path}: no such file")
    try:
        model = onnx.load(str(model_path))
    except Exception:
        raise BundleError(f"{model_path}: not an ONNX model") from None
    domains = custom_ops(model)
    unknown = {d: t for d, t in domains.items() if d != ops.DOMAIN}
    if unknown:
        what = "; ".join(f"{d}: {', '.join(t)}" for d, t in unknown.items())
        raise BundleError(f"{model_path.name} uses custom ops with no library for {target} ({what})")
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty")
    needs_library = ops.DOMAIN in domains
    results_record = _results(Path(results) if results else None)
    try:
        library = toolchain.build_op_library(target) if needs_library else None
        runner = toolchain.build_runner(target)
        ort_library = toolchain.onnxruntime_library(target)
    except toolchain.ToolchainError as e:
        need = f"its axmoe ops ({', '.join(domains[ops.DOMAIN])}) need libaxmoe_ort.so" if needs_library else "runner"
        raise BundleError(f"cannot bundle {model_path.name} for {target}: {need}; {e}") from None

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, out / MODEL)
    if library is not None:
        shutil.copyfile(library, out / LIBRARY)
    shutil.copy2(runner, out / RUNNER)
    shutil.copyfile(ort_library, out / toolchain.ORT_SONAME)
    shutil.copyfile(Path(__file__).with_name("run_bundle.py"), out / PY_RUNNER)

    nodes, tables = _multipliers(metadata.get(model, metadata.ASSIGNMENT, {}) or {})
    dims = model.graph.input[0].type.tensor_type.shape.dim
    files = {p.name: sha256_file(p) for p in sorted(out.iterdir())}
    manifest = {
        "format": FORMAT,
        "target": target,
        "backend": backend,
        "onnxruntime": ort_library.name.removeprefix("libonnxruntime.so."),
        "source": {"name": model_path.name, "sha256": files[MODEL]},
        "input": [d.dim_param or d.dim_value for d in dims],
        "library": LIBRARY if library is not None else None,
        "custom_ops": domains.get(ops.DOMAIN, []),
        "plan": metadata.get(model, metadata.PLAN),
        "nodes": nodes,
        "multipliers": tables,
        "normalised_power": results_record["normalised_power"] if results_record else None,
        "accuracy": results_record,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / README).write_text(_readme(manifest))
    return manifest


def verify(folder: str | Path) -> dict[str, Any]:
    """The bundle's manifest, after checking every file it lists against its sha256."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BundleError(f"{folder}: no readable {MANIFEST} (not a bundle)") from None
    for name, want in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != want:
            raise BundleError(f"{path}: sha256 does not match the manifest (corrupted or replaced; rebuild the bundle)")
    return manifest
