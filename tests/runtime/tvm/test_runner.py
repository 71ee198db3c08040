"""Whole models through `runtime.tvm.session` == onnxruntime, bit for bit: ResNet-20 dense and
hard MoE, ViT-Small (small size) hard MoE, dense and soft MoE, approximate multipliers of both
kinds (mul8s_1KVA: partial products, 1 + 4 correction terms; mul8s_1L2J: operand masks) in both lowerings (`lut`:
axmoe.Approx* ops; `decomposed`: standard integer ops on masked operands), both kernel forms
(`auto`: exact integer decomposition, VNNI dot products on this CPU; `lut`: table lookups),
and a host target without AVX-512 VNNI (the generic vector loop).

ViT's float ops (LayerNorm, GELU's erf, the router's softmax) still round unlike onnxruntime's
MLAS kernels in the last bit now and then; the QuantizeLinear after each absorbs that on these
inputs. Its int8 attention is exact: onnxruntime's fused QLinearMatMul / QLinearSoftmax
(`runtime.tvm.ort_fusions`, `contrib_ops`)."""

import numpy as np
import pytest

import runtime.tvm
from axmoe_testing import run_ort

NO_VNNI = '{"kind": "llvm", "mcpu": "x86-64-v3"}'  # AVX2 + FMA, no AVX-512: runs on any recent x86

CASES = [
    # arch, topology, multiplier, lowering, kernel, target
    ("resnet20", "dense", "mul8s_1KVA", "lut", "auto", "host"),
    ("resnet20", "dense", "mul8s_1KVA", "decomposed", "auto", "host"),
    ("resnet20", "dense", "mul8s_1L2J", "lut", "lut", "host"),
    ("resnet20", "dense", "mul8s_1L2J", "decomposed", "auto", NO_VNNI),
    ("resnet20", "hard", "mul8s_1KVA", "lut", "auto", "host"),
    ("resnet20", "hard", "mul8s_1L2J", "decomposed", "auto", "host"),
    ("vit_small", "hard", "mul8s_1KVA", "lut", "auto", "host"),
    ("vit_small", "hard", "mul8s_1L2J", "decomposed", "auto", "host"),
    # onnxruntime fuses Add + LayerNorm here (SkipLayerNormalization) ...
    ("vit_small", "dense", "mul8s_1KVA", "lut", "auto", "host"),
    # ... and moves a QuantizeLinear across the dispatch Transpose before fusing the softmax
    ("vit_small", "soft", "mul8s_1L2J", "decomposed", "auto", "host"),
]


def case_id(case):
    case = case.values[0] if hasattr(case, "values") else case
    arch, topology, mult, lowering, kernel, target = case
    return f"{arch}-{topology}-{mult}-{lowering}-kernel_{kernel}" + ("-novnni" if target != "host" else "")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_model_equals_onnxruntime(case, rewritten, images):
    arch, topology, mult, lowering, kernel, target = case
    if target != "host" and not _host_runs(target):
        pytest.skip(f"this CPU cannot run {target}")
    path = rewritten(arch, topology, mult, lowering)
    sess = runtime.tvm.session(str(path), threads=2, kernel=kernel, target=target)
    import onnx

    model = onnx.load(str(path))
    want = run_ort(model, images)
    got = sess.run(images)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want), f"{np.sum((got != want).any(axis=1))} of {len(images)} images differ"
    # batch 1 and an odd batch take the same library (symbolic batch)
    assert np.array_equal(sess.run(images[:1]), want[:1])
    assert np.array_equal(sess.run(images[:5]), want[:5])


def _host_runs(target: str) -> bool:
    import tvm

    from runtime.tvm.build import resolve_target

    features = set(tvm.target.codegen.llvm_get_cpu_features(resolve_target("host")))
    return {"avx2", "fma"} <= features


def test_session_is_cached_and_checks_inputs(rewritten, images, tmp_path, monkeypatch):
    path = rewritten("resnet20", "dense", "mul8s_1KVA", "lut")
    runtime.tvm.session(str(path))  # compiled (or cached) by the case above

    def no_compile(*args, **kwargs):
        raise AssertionError("a second session of the same model must load the cached library")

    monkeypatch.setattr("runtime.tvm.build.compile_model", no_compile)
    sess = runtime.tvm.session(str(path), threads=1)
    assert np.array_equal(sess.run(images[:2]), runtime.tvm.session(str(path), threads=2).run(images[:2]))
    with pytest.raises(ValueError, match=r"must have shape \[N, 3, 32, 32\], got \[2, 3, 16, 16\]"):
        sess.run(images[:2, :, :16, :16])
    with pytest.raises(ValueError, match="no such file"):
        runtime.tvm.session(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not an ONNX model"):
        runtime.tvm.session(str(bad))
