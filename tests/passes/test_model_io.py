"""passes.model_io: reading and writing model files, every bad input one `ModelFileError`."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes import model_io
from passes.model_io import ModelFileError
from runtime.ort import session

W = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)  # 8 KiB: stored externally
X = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)


def matmul_model(opset=18, **opsets) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
                              [numpy_helper.from_array(W, "w")])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in opsets.items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


def run(model) -> np.ndarray:
    return session(model if not isinstance(model, onnx.ModelProto) else model.SerializeToString(),
                   threads=1).run(None, {"x": X})[0]


def save_external(model, path, location=None):
    onnx.save_model(model, str(path), save_as_external_data=True, location=location or path.name + ".data",
                    size_threshold=0)


def test_load_reads_a_plain_model(tmp_path):
    onnx.save(matmul_model(), str(tmp_path / "m.onnx"))
    model = model_io.load(tmp_path / "m.onnx")
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), W)


def test_missing_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        model_io.load(tmp_path / "nope.onnx")
    with pytest.raises(ModelFileError, match="not a file"):
        model_io.load(tmp_path)


def test_every_truncation_is_refused(tmp_path):
    """Every proper prefix of a model file (and the empty file) is refused, none parses into a
    partial model the pass would go on to rewrite."""
    data = matmul_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(ModelFileError, match="not an ONNX model") as info:
            model_io.load(path)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"\x00\x01not onnx", b"hello world\n", bytes(range(256))])
def test_corrupt_file(tmp_path, content):
    (tmp_path / "junk.onnx").write_bytes(content)
    with pytest.raises(ModelFileError, match="junk.onnx: not an ONNX model"):
        model_io.load(tmp_path / "junk.onnx")


@pytest.mark.parametrize("opset", [7, 11, 12])
def test_old_opset_names_the_minimum(tmp_path, opset):
    onnx.save(matmul_model(opset), str(tmp_path / "old.onnx"))
    with pytest.raises(ModelFileError, match=f"opset {opset} is below the minimum, 13"):
        model_io.load(tmp_path / "old.onnx")


def test_minimum_opset_loads(tmp_path):
    onnx.save(matmul_model(model_io.MIN_OPSET), str(tmp_path / "m.onnx"))
    assert model_io.load(tmp_path / "m.onnx").opset_import[0].version == 13


def test_no_default_domain_opset(tmp_path):
    model = matmul_model(**{"com.microsoft": 1})
    del model.opset_import[0]
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelFileError, match="no ai.onnx opset import"):
        model_io.load(tmp_path / "m.onnx")


def test_external_data_is_read_from_the_models_folder(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    save_external(matmul_model(), folder / "m.onnx")
    assert (folder / "m.onnx.data").stat().st_size == W.nbytes
    monkeypatch.chdir(tmp_path)  # the data file is not next to the working directory
    model = model_io.load("model/m.onnx")
    (tensor,) = model.graph.initializer
    assert tensor.data_location == TensorProto.DEFAULT and not tensor.external_data
    np.testing.assert_array_equal(numpy_helper.to_array(tensor), W)
    np.testing.assert_array_equal(run(model), X @ W)


def test_missing_external_data_file(tmp_path):
    save_external(matmul_model(), tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelFileError, match=r"tensor 'w': external data file 'm.onnx.data' not found in the "
                                             r"model's folder") as info:
        model_io.load(tmp_path / "m.onnx")
    assert "\n" not in str(info.value)


def test_truncated_external_data_file(tmp_path):
    save_external(matmul_model(), tmp_path / "m.onnx")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="is truncated"):
        model_io.load(tmp_path / "m.onnx")


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd"])
def test_external_data_outside_the_folder(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    model = matmul_model()
    save_external(model, folder / "m.onnx")
    model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(folder / "m.onnx"))
    (tmp_path / "outside.data").write_bytes(W.tobytes())
    with pytest.raises(ModelFileError, match="is not inside the model's folder"):
        model_io.load(folder / "m.onnx")


def test_save_small_model_is_one_file(tmp_path):
    path = model_io.save(matmul_model(), tmp_path / "new" / "folder" / "m.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.onnx"]
    np.testing.assert_array_equal(run(model_io.load(path)), X @ W)


def test_save_over_the_limit_writes_external_data(tmp_path, monkeypatch):
    """Above MAX_PROTO_BYTES the tensors go to OUT.data next to OUT; the pair loads (with
    `load`, and in onnxruntime from the path) and computes what the model computed."""
    model = matmul_model()
    expected = run(model)
    monkeypatch.setattr(model_io, "MAX_PROTO_BYTES", 4096)  # the model is 8 KiB
    path = tmp_path / "out.onnx"
    for _ in range(2):  # a second save replaces the data file, it does not append to it
        model_io.save(onnx.ModelProto.FromString(model.SerializeToString()), path)
        assert (tmp_path / "out.onnx.data").stat().st_size == W.nbytes
        assert path.stat().st_size < 1024
    raw = onnx.load(str(path), load_external_data=False)
    assert onnx.external_data_helper.uses_external_data(raw.graph.initializer[0])
    np.testing.assert_array_equal(run(model_io.load(path)), expected)
    np.testing.assert_array_equal(run(path), expected)


def test_save_to_a_folder_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder"):
        model_io.save(matmul_model(), tmp_path)
