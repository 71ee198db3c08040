"""The pass on models onnxruntime's own quantizer writes (`tests/passes/corpus.py`): every
architecture in QDQ and QOperator format, QUInt8 and QInt8 activations, per-channel and
per-tensor weights. For each: the exact multiplier leaves outputs identical; mul8s_1KVA
rewrites at least one op, changes the outputs, gives a model that passes the validity check
and loads in onnxruntime, and its `lut` and `decomposed` lowerings agree bit for bit."""

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from passes import validity
from passes.approximate import approximate
from runtime.ort import session

sys.path.insert(0, str(Path(__file__).parent))  # the corpus builder, tests/passes/corpus.py (importlib mode)
import corpus  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice on pre-processing

PP_MULTIPLIER = "mul8s_1KVA"  # partial products with correction terms: both lowerings apply
CASES = [(name, fmt, activation, per_channel) for name in corpus.ARCHITECTURES for fmt in ("QDQ", "QOperator")
         for activation in ("QUInt8", "QInt8") for per_channel in (False, True)]


def _id(case) -> str:
    name, fmt, activation, per_channel = case
    return f"{name}-{fmt}-{activation}-{'per_channel' if per_channel else 'per_tensor'}"


def _run(model: onnx.ModelProto, xs: list[np.ndarray]) -> list[np.ndarray]:
    runner = session(model.SerializeToString(), threads=1)
    return [runner.run(None, {"input": x})[0] for x in xs]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_quantizer_output_is_rewritten_validly_and_exactly(case):
    name = case[0]
    model = corpus.quantized(*case)
    xs = corpus.inputs(name, 2, seed=5)
    base = _run(model, xs)

    exact, report = approximate(model, {"multiplier": "exact"})
    assert report.summary().get("exact", 0) >= 1, report.to_dict()
    assert _same(_run(exact, xs), base)

    outs = {}
    for lowering in ("lut", "decomposed"):
        out, report = approximate(model, {"multiplier": PP_MULTIPLIER, "lowering": lowering})
        rewritten = [n for n in report.nodes if n.status == "rewritten"]
        assert rewritten, f"{lowering}: nothing rewritten: {[(n.node, n.reason) for n in report.skipped]}"
        validity.check(out, model)
        outs[lowering] = _run(out, xs)  # loads in onnxruntime (with the custom-op library)
        assert not _same(outs[lowering], base), f"{lowering}: outputs equal the exact model's"
    assert _same(outs["lut"], outs["decomposed"])
