"""Compile an axmoe ONNX model with TVM: targets, the Relax pipeline, the deployable library.

    lib = compile_model(model, "host")                    # tvm.runtime.Executable
    export(lib, "model.so", "aarch64", signature(model, 1))  # cross-linked with aarch64-linux-gnu-g++,
                                                          # + model.so.json (what `run` needs)

Targets: "host" (this CPU, its features detected by LLVM), "aarch64" (Raspberry Pi 4 class:
{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}), or a JSON target
dict as TVM 0.27 takes it.

Pipeline (TVM's CPU pipeline, plus the kernel schedules):

    LegalizeOps -> AnnotateTIROpPattern -> FoldConstant (packs the weights) -> FuseOps -> FuseTIR
    -> schedule: axmoe kernels (`schedule.KERNEL_SCHEDULES`), every other PrimFunc with
       `generic.schedule` (parallel outer loop, vectorized inner loop)
    -> TVM's dataflow lowering and finalization
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from runtime.tvm import fp_exact, generic, schedule
from runtime.tvm.frontend import from_onnx
from runtime.tvm.runner import sidecar

AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
CROSS_COMPILER = "aarch64-linux-gnu-g++"


class TargetError(ValueError):
    pass


def resolve_target(spec: str | dict | tvm.target.Target) -> tvm.target.Target:
    """"host", "aarch64", a JSON dict (string or dict) or a Target -> Target."""
    if isinstance(spec, tvm.target.Target):
        return spec
    if isinstance(spec, dict):
        config = spec
    elif spec == "host":
        config = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    elif spec == "aarch64":
        config = AARCH64
    else:
        try:
            config = json.loads(spec)
        except json.JSONDecodeError:
            raise TargetError(f"target must be 'host', 'aarch64' or a JSON dict such as {json.dumps(AARCH64)}, "
                              f"got {spec!r}") from None
        if not isinstance(config, dict):
            raise TargetError(f"a JSON target must be a dict, got {spec!r}")
    if config.get("kind") != "llvm":
        raise TargetError(f"only CPU targets (kind 'llvm') are supported, got {json.dumps(config)}")
    try:
        return tvm.target.Target(config)
    except Exception as exc:  # TVM validates targets with its own exception types
        raise TargetError(f"invalid target {json.dumps(config)}: {str(exc).splitlines()[-1]}") from None


def check_toolchain(target: tvm.target.Target) -> None:
    """TargetError unless this machine can link a library for `target` (a foreign triple needs
    `CROSS_COMPILER`); called before a compile so a missing toolchain fails fast."""
    if is_cross(target) and shutil.which(CROSS_COMPILER) is None:
        raise TargetError(f"{CROSS_COMPILER} not found: install Debian's g++-aarch64-linux-gnu to link "
                          f"for {target.attrs['mtriple']}")


def describe_target(target: tvm.target.Target) -> str:
    """One line: triple and CPU, e.g. 'aarch64-linux-gnu cortex-a72'."""
    triple = str(target.attrs.get("mtriple", "") or "") or tvm.target.codegen.llvm_get_system_triple()
    return f"{triple} {target.attrs.get('mcpu', '') or 'generic'}"


def is_cross(target: tvm.target.Target) -> bool:
    """Whether `target` needs a cross toolchain (its triple differs from this machine's)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if not triple:
        return False
    host_arch = tvm.target.codegen.llvm_get_system_triple().split("-")[0]
    return triple.split("-")[0] != host_arch


@tvm.transform.module_pass(opt_level=0, name="axmoe.ScheduleCPU")
class ScheduleCPU:
    """Schedules every PrimFunc of the module for `target` (see module docstring)."""

    def __init__(self, target: tvm.target.Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gvar, func in mod.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            kind = func.attrs.get(schedule.KERNEL_ATTR) if func.attrs else None
            if kind == "scheduled":
                continue
            if kind is not None:
                updates[gvar] = schedule.KERNEL_SCHEDULES[str(kind)](func, self.target).with_attrs(func.attrs)
            else:
                updates[gvar] = generic.schedule(func)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


def relax_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="axmoe.RelaxPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            passes = (cpu_pipeline.library_dispatch_passes(target)
                      + [relax.transform.LegalizeOps(fp_exact.LEGALIZE_MAP),
                         relax.transform.AnnotateTIROpPattern(),
                         relax.transform.FoldConstant(),
                         relax.transform.FuseOps(),
                         relax.transform.FuseTIR(),
                         relax.transform.DeadCodeElimination(),
                         ScheduleCPU(target)]
                      + cpu_pipeline.dataflow_lower_passes(target)
                      + cpu_pipeline.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_model(model: onnx.ModelProto, target="host", batch: int | None = None, kernel: str = "auto"):
    """Import and compile `model`; returns a `tvm.runtime.Executable`."""
    target = resolve_target(target)
    with target:
        mod = from_onnx(model, batch=batch, kernel=kernel)
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))


def signature(model: onnx.ModelProto, batch: int | None) -> dict:
    """What a runner needs to feed a compiled model: its (single) input's name, shape (the batch
    `batch`, or None when symbolic) and dtype, and its output names."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"the TVM backend runs models with one input, this one has {len(inputs)}: "
                         f"{', '.join(v.name for v in inputs)}")
    value = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if dims:
        dims[0] = batch
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    return {"input": {"name": value.name, "shape": dims, "dtype": dtype},
            "outputs": [v.name for v in model.graph.output]}


def export(executable, path: str | Path, target="host", metadata: dict | None = None) -> Path:
    """Write the deployable shared library (cross-linked for a foreign triple) and, when given,
    its metadata (`signature` plus anything else) as `sidecar(path)`."""
    target = resolve_target(target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_toolchain(target)
    if is_cross(target):
        from tvm.support import cc

        executable.export_library(str(path), fcompile=cc.cross_compiler(CROSS_COMPILER))
    else:
        executable.export_library(str(path))
    if metadata is not None:
        info = {**metadata, "target": target_config(target), "tvm": tvm.__version__}
        sidecar(path).write_text(json.dumps(info, indent=1) + "\n")
    return path


def target_config(target: tvm.target.Target) -> dict:
    """The JSON dict of `target` (kind, mtriple, mcpu, mattr: what `resolve_target` takes)."""
    config = {"kind": target.kind.name}
    for key in ("mtriple", "mcpu", "mattr"):
        value = target.attrs.get(key)
        if value:
            config[key] = [str(v) for v in value] if key == "mattr" else str(value)
    return config
