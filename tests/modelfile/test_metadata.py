"""modelfile.metadata: the stored strings of every key, typed round trips, decode errors."""

import onnx
import pytest
from onnx import helper

from export.exporter import model_metadata
from modelfile import metadata
from modelfile.metadata import MetadataError


def empty_model(**props) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph([], "g", [], []))
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    return model


VALUES = {
    metadata.ARCH: "resnet20", metadata.TOPOLOGY: "hard", metadata.NUM_CLASSES: "10", metadata.EXPERTS: 4,
    metadata.OPTIONS: {"width": 4, "num_experts": 4}, metadata.DATASET: "fashion-mnist",
    metadata.DATA: {"image_size": 32, "mean": [0.5], "dataset": "fashion-mnist"}, metadata.VERSION: "0.1.0",
    metadata.CALIBRATION: "minmax", metadata.QUANTIZATION: "symmetric-int8",
    metadata.PLAN: {"multiplier": "mul8s_1KV9", "lowering": "auto"},
    metadata.ASSIGNMENT: {"/stem/stem.0/Conv": {"multiplier": "mul8s_1KV9", "lowering": "lut", "rule": "default"}},
}


def test_the_stored_key_names_are_the_file_format():
    assert [k.name for k in metadata.KEYS] == [
        "axmoe.arch", "axmoe.topology", "axmoe.num_classes", "axmoe.experts", "axmoe.options", "axmoe.dataset",
        "axmoe.data", "axmoe.version", "axmoe.calibration", "axmoe.quantization", "axmoe.plan", "axmoe.assignment",
        "axmoe.compensation"]
    assert [k.short for k in metadata.KEYS] == [k.name.removeprefix("axmoe.") for k in metadata.KEYS]


def test_write_then_read_round_trips_every_key():
    model = empty_model()
    metadata.write(model, VALUES)
    assert metadata.read(model) == {k.short: v for k, v in VALUES.items()}
    assert all(metadata.get(model, k) == v and metadata.has(model, k) for k, v in VALUES.items())


def test_values_are_stored_as_plain_strings_json_with_sorted_keys():
    model = empty_model()
    metadata.write(model, VALUES)
    stored = metadata.raw(model)
    assert list(stored) == [k.name for k in VALUES]
    assert stored["axmoe.experts"] == "4"
    assert stored["axmoe.options"] == '{"num_experts": 4, "width": 4}'
    assert stored["axmoe.data"] == '{"dataset": "fashion-mnist", "image_size": 32, "mean": [0.5]}'


def test_write_replaces_in_place_and_appends_new_keys():
    model = empty_model(**{"onnx.infer": "onnxruntime.quant", "axmoe.plan": "{}", "axmoe.arch": "vgg11_bn"})
    metadata.write(model, {metadata.ASSIGNMENT: {}, metadata.PLAN: {"multiplier": "exact"}})
    assert [(p.key, p.value) for p in model.metadata_props] == [
        ("onnx.infer", "onnxruntime.quant"), ("axmoe.plan", '{"multiplier": "exact"}'), ("axmoe.arch", "vgg11_bn"),
        ("axmoe.assignment", "{}")]


def test_missing_keys_give_the_default_and_others_are_not_read():
    model = empty_model(**{"onnx.infer": "onnxruntime.quant", "axmoe.kernel": "conv2d"})
    assert metadata.get(model, metadata.ASSIGNMENT) is None
    assert metadata.get(model, metadata.ASSIGNMENT, {}) == {}
    assert not metadata.has(model, metadata.PLAN)
    assert metadata.read(model) == {}
    assert metadata.raw(model) == {"onnx.infer": "onnxruntime.quant", "axmoe.kernel": "conv2d"}


@pytest.mark.parametrize("key, stored, message", [
    (metadata.EXPERTS, "four", r"^model metadata axmoe\.experts='four' is not an integer \(invalid literal"),
    (metadata.ASSIGNMENT, '{"/fc/Gemm": ',
     r"^model metadata axmoe\.assignment='\{\"/fc/Gemm\": ' is not JSON \(Expecting"),
    (metadata.PLAN, "", r"^model metadata axmoe\.plan='' is not JSON \(Expecting value"),
])
def test_a_value_that_does_not_decode_is_a_one_line_error_naming_the_key(key, stored, message):
    model = empty_model(**{key.name: stored})
    for read in (lambda: metadata.get(model, key), lambda: metadata.read(model)):
        with pytest.raises(MetadataError, match=message) as info:
            read()
        assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_a_long_bad_value_is_cut_in_the_message():
    model = empty_model(**{"axmoe.options": "x" * 500})
    with pytest.raises(MetadataError) as info:
        metadata.get(model, metadata.OPTIONS)
    assert "x" * 60 in str(info.value) and "x" * 61 not in str(info.value)


def test_the_exporters_record_reads_back_typed():
    config = {"arch": "resnet20", "topology": "hard", "num_classes": 100, "options": {"num_experts": 4, "width": 8}}
    data = {"dataset": "cifar100", "image_size": 32}
    model = empty_model()
    metadata.write(model, model_metadata(config, data, "percentile", "symmetric-int8"))
    assert list(metadata.raw(model)) == ["axmoe.arch", "axmoe.topology", "axmoe.num_classes", "axmoe.experts",
                                         "axmoe.options", "axmoe.dataset", "axmoe.data", "axmoe.version",
                                         "axmoe.calibration", "axmoe.quantization"]
    meta = metadata.read(model)
    assert meta["arch"] == "resnet20" and meta["topology"] == "hard" and meta["num_classes"] == "100"
    assert meta["experts"] == 4 and meta["options"] == config["options"] and meta["data"] == data
    assert meta["calibration"] == "percentile" and meta["quantization"] == "symmetric-int8"


def test_a_dense_export_has_no_experts_and_fp32_has_no_calibration():
    config = {"arch": "vgg11_bn", "topology": "dense", "options": {"num_experts": 4}}
    model = empty_model()
    metadata.write(model, model_metadata(config, {}, None, None))
    meta = metadata.read(model)
    assert meta["experts"] == 0 and meta["num_classes"] == "None" and meta["dataset"] == ""
    assert "calibration" not in meta and "quantization" not in meta
