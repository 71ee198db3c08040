"""Masking of stored activation bytes, with and without the Bitwise ops of opset 18."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multipliers.lut import apply_mask
from passes.candidates import IntegerOp
from passes.lowering import Builder, byte_field, mask_activation

BYTES = np.arange(256, dtype=np.uint8)


def run_mask(fn, opset: int, **kwargs) -> np.ndarray:
    """Build x -> fn(builder, x) as a one-input graph and run it on all 256 byte values."""
    x = ir.Value(name="x", shape=ir.Shape([256]), type=ir.TensorType(ir.DataType.UINT8))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": opset}, name="g")
    builder = Builder(graph, "t", bitwise=opset >= 18)
    out = fn(builder, x, **kwargs)
    graph.extend(builder.nodes)
    graph.outputs.append(out)
    model = ir.to_proto(ir.Model(graph, ir_version=10))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": BYTES})[0]


@pytest.mark.parametrize("opset", [17, 18])
@given(mask=st.integers(1, 255))
def test_byte_field(opset, mask):
    low = (mask & -mask).bit_length() - 1
    assert np.array_equal(run_mask(byte_field, opset, mask=mask, shift_down=False), BYTES & mask)
    assert np.array_equal(run_mask(byte_field, opset, mask=mask, shift_down=True), (BYTES & mask) >> low)


@pytest.mark.parametrize("opset", [17, 18])
@given(mask=st.integers(1, 255))
def test_masking_the_uint8_form_masks_the_signed_operand(opset, mask):
    """For q = a + 128 stored as uint8: result - 128 == a & mask (two's complement)."""
    def fn(builder, x):
        op = IntegerOp(node=None, kind="matmul", form="qdq", x=x, x_zero_point=128, weight=np.zeros((1, 1), np.int8))
        return mask_activation(builder, op, mask)

    out = run_mask(fn, opset).astype(np.int64) - 128
    assert np.array_equal(out, apply_mask(BYTES.astype(np.int64) - 128, mask))
