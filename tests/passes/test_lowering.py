"""Masking of stored activation bytes, with and without the Bitwise ops of opset 18."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multipliers.lut import apply_mask
from passes.candidates import IntegerOp
from passes.lowering import Builder, MaskUnsupported, byte_field, mask_activation, uint8_activation

BYTES = np.arange(256, dtype=np.uint8)


def run_mask(fn, opset: int, dtype=np.uint8, **kwargs) -> np.ndarray:
    """Build x -> fn(builder, x) as a one-input graph and run it on all 256 byte values
    (of `dtype`: uint8 0..255 or int8 -128..127)."""
    ir_type = ir.DataType.UINT8 if dtype == np.uint8 else ir.DataType.INT8
    x = ir.Value(name="x", shape=ir.Shape([256]), type=ir.TensorType(ir_type))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": opset}, name="g")
    builder = Builder(graph, "t", bitwise=opset >= 18)
    out = fn(builder, x, **kwargs)
    graph.extend(builder.nodes)
    graph.outputs.append(out)
    model = ir.to_proto(ir.Model(graph, ir_version=10))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": BYTES.view(dtype)})[0]


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


def _int8_op(x) -> IntegerOp:
    return IntegerOp(node=None, kind="matmul", form="qdq", x=x, x_zero_point=0, weight=np.zeros((1, 1), np.int8))


@pytest.mark.parametrize("opset", [13, 14, 17, 18])
def test_int8_re_encoding_is_the_same_signed_operand(opset):
    """q (int8, zero point 0) -> u = q + 128 (uint8, zero point 128), on all 256 values."""
    ops = []

    def fn(builder, x):
        op = uint8_activation(builder, _int8_op(x))
        ops.append(op)
        return op.x

    out = run_mask(fn, opset, dtype=np.int8)
    assert out.dtype == np.uint8 and ops[0].x_zero_point == 128
    assert np.array_equal(out.astype(np.int64) - 128, BYTES.view(np.int8).astype(np.int64))


def test_uint8_activation_is_read_as_it_is():
    x = ir.Value(name="x", shape=ir.Shape([4]), type=ir.TensorType(ir.DataType.UINT8))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 18}, name="g")
    builder = Builder(graph, "t")
    op = IntegerOp(node=None, kind="matmul", form="qdq", x=x, x_zero_point=128, weight=np.zeros((1, 1), np.int8))
    assert uint8_activation(builder, op) is op and not builder.nodes


@given(mask=st.integers(1, 255))
def test_masking_the_int8_form_in_place(mask):
    """int8 storage holds a itself: a & mask with BitwiseAnd (opset 18); below, no int8 mask."""
    out = run_mask(lambda builder, x: mask_activation(builder, _int8_op(x), mask), 18, dtype=np.int8)
    assert out.dtype == np.int8
    assert np.array_equal(out.astype(np.int64), apply_mask(BYTES.view(np.int8), mask))
    if mask != 0xFF:
        with pytest.raises(MaskUnsupported):
            run_mask(lambda builder, x: mask_activation(builder, _int8_op(x), mask), 17, dtype=np.int8)
