"""axmoe.ApproxMatMulInteger == the numpy oracle (multipliers.oracle.lut_matmul), bit for bit,
for every kernel ISA this CPU has and both paths, on hypothesis-drawn shapes with numpy
broadcasting of batch dims, 1-D operands, both activation zero-point forms (scalar and
per-row), and catalog and non-decomposable multipliers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multipliers.oracle import lut_matmul
from op_models import LUT_NAMES, integer_op_model, lut, sessions, signed


@st.composite
def matmul_cases(draw):
    m, k, n = draw(st.integers(1, 70)), draw(st.integers(1, 40)), draw(st.integers(1, 70))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    # each operand takes a suffix of the batch dims, some set to 1 (broadcast)
    def operand_batch():
        dims = batch[len(batch) - draw(st.integers(0, len(batch))):]
        return [d if draw(st.booleans()) else 1 for d in dims]
    a_shape = [*operand_batch(), m, k] if draw(st.integers(0, 5)) else [k]
    b_shape = [*operand_batch(), k, n] if draw(st.integers(0, 5)) else [k]
    return dict(a_shape=a_shape, b_shape=b_shape,
                a_form=draw(st.sampled_from(["uint8", "int8", "int8+zp", "uint8 per-row zp"])),
                b_zp=draw(st.sampled_from(["none", "scalar", "per-column"])),
                luts=draw(st.lists(st.sampled_from(LUT_NAMES), min_size=1, max_size=2, unique=True)),
                seed=draw(st.integers(0, 2**31 - 1)))


def check_matmul(case, threads=2):
    rng = np.random.default_rng(case["seed"])
    a_shape, b_shape = case["a_shape"], case["b_shape"]
    m = a_shape[-2] if len(a_shape) > 1 else 1
    n = b_shape[-1] if len(b_shape) > 1 else 1
    if case["a_form"].startswith("uint8"):
        a = rng.integers(0, 256, a_shape, dtype=np.uint8)
        a_zp = np.full(m, 128, np.uint8) if "per-row" in case["a_form"] and len(a_shape) > 1 else 128
    else:
        a = rng.integers(-128, 128, a_shape, dtype=np.int8)
        a_zp = 0 if case["a_form"] == "int8+zp" else None
    b = rng.integers(-128, 128, b_shape, dtype=np.int8)
    b_zp = {"none": None, "scalar": 0, "per-column": np.zeros(n, np.int8)}[case["b_zp"]]
    if len(b_shape) == 1 and case["b_zp"] == "per-column":
        b_zp = 0
    model, feeds = integer_op_model("ApproxMatMulInteger", a, b, a_zp, b_zp)
    runs = sessions(model, threads)
    signed_a = signed(a, a_zp)
    for name in case["luts"]:
        table = lut(name)
        want = lut_matmul(signed_a, b, table)
        for variant, sess in runs.items():
            (got,) = sess.run(None, {**feeds, "lut": table})
            assert got.dtype == np.int32 and got.shape == want.shape, (variant, name, got.shape, want.shape)
            assert np.array_equal(got, want), (variant, name, case, np.argwhere(got != want)[:5])


@settings(max_examples=50)
@given(matmul_cases())
def test_matmul_matches_oracle(case):
    check_matmul(case)


@pytest.mark.parametrize("a_shape, b_shape", [
    ([1, 384], [384, 100]),         # classifier at batch 1: lanes over N
    ([65, 96], [96, 300]),          # ViT-like tokens: 65 rows, several 64-lane panels
    ([2, 3, 70, 33], [3, 33, 17]),  # broadcast batch, odd K
    ([300, 5], [5, 3]),             # many rows, tiny N
    ([4, 1, 10, 8], [1, 5, 8, 12]), # both operands broadcast
], ids=["gemv", "tokens", "batched", "tall", "broadcast-both"])
def test_matmul_tiling_edges(a_shape, b_shape):
    check_matmul(dict(a_shape=a_shape, b_shape=b_shape, a_form="uint8", b_zp="none", seed=2,
                      luts=["mul8s_1KVQ", "mitchell"]))
