"""`python -m eval sweep` end to end on a tiny study (ResNet-20 of width 4, a few training
steps, 64 test images, two multipliers), on the local process pool and on Ray, evaluated
with onnxruntime and TVM."""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from axmoe_testing import require_tool
from eval import sweep_args
from eval.cli import main
from eval.executors import ExecutorError, make_executor
from eval.sweep_config import SweepConfigError, config_hash, load_config, to_argv

TINY = {
    "dataset": "fashion-mnist",
    "archs": ["resnet20"],
    "multipliers": ["mul8s_1L2L", "mul8s_1KV6"],
    "train": {"epochs": 1, "max_steps": 4, "batch_size": 32, "limit_train": 256, "limit_test": 64,
              "model_opt": {"width": 4}, "log_every": 0, "eval_batch_size": 64},
    "export": {"calib_samples": 32},
    "eval": {"limit": 64, "batch": 32, "warmup": 1},
}
PNG = b"\x89PNG\r\n\x1a\n"


def write_config(folder: Path, name: str = "sweep.yaml", **overrides) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({**TINY, "out": str(folder / "out"), **overrides}))
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def check_report(out: Path, cells: int, plots: tuple[str, ...]) -> list[dict]:
    table = read_csv(out / "results.csv")
    assert len(table) == cells and all(r["status"] == "ok" for r in table)
    assert len(json.loads((out / "results.json").read_text())) == cells
    report = (out / "report" / "report.md").read_text()
    for name in plots:
        png = out / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000, name
        assert f"({name}.png)" in report
    assert "| arch | topology | multiplier |" in report
    return table


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, fashion):
    folder = tmp_path_factory.mktemp("sweep-local")
    config = write_config(folder, topologies=["dense", "hard"], retrained=[False, True],
                          retrain_multipliers=["mul8s_1L2L"], retrain={"max_steps": 1, "batch_size": 16})
    assert main(["sweep", str(config), "--workers", "2", "--threads", "1"]) == 0
    return config, folder / "out"


def test_local_sweep_table_and_plots(local_sweep):
    _, out = local_sweep
    table = check_report(out, 6, ("accuracy_vs_power", "accuracy_vs_multiplier", "expert_load"))
    assert "backend" not in table[0]  # an axis left at its implicit value adds no column
    by = {(r["topology"], r["multiplier"], r["retrained"]): r for r in table}
    assert set(by) == {(t, m, "False") for t in ("dense", "hard") for m in ("mul8s_1KV6", "mul8s_1L2L")} | \
        {(t, "mul8s_1L2L", "True") for t in ("dense", "hard")}
    # rows come ordered by power, exact first
    assert [r["multiplier"] for r in table[:2]] == ["mul8s_1KV6", "mul8s_1L2L"]
    assert float(by["dense", "mul8s_1KV6", "False"]["normalised_power"]) == 1.0
    assert float(by["dense", "mul8s_1L2L", "False"]["normalised_power"]) == pytest.approx(0.2 / 0.425)
    hard = float(by["hard", "mul8s_1KV6", "False"]["normalised_power"])
    assert 1.0 < hard < 1.001  # the float router on top of the dense model's work
    assert by["hard", "mul8s_1KV6", "False"]["max_expert_share"] != ""
    assert by["dense", "mul8s_1KV6", "False"]["max_expert_share"] == ""
    for key in [("dense", "mul8s_1L2L", "True"), ("hard", "mul8s_1L2L", "True")]:
        assert 0 <= float(by[key]["before_top1"]) <= 1
        assert "/retrain/" in json.loads((out / "results.json").read_text())[table.index(by[key])]["model"]
    for r in table:
        assert 0 <= float(r["top1"]) <= float(r["top5"]) <= 1 and float(r["p50_ms"]) > 0


def test_cells_are_cached_and_resume(local_sweep, capsys):
    config, out = local_sweep
    capsys.readouterr()
    start = time.time()
    assert main(["sweep", str(config)]) == 0
    assert "0 jobs to run" in capsys.readouterr().out
    assert time.time() - start < 30  # only imports and plotting
    # an interrupted cell (no result.json) is the only job that runs again
    cell = next(p for p in sorted((out / "jobs").glob("cell-*"))
                if "retrained: false" in p.joinpath("config.yaml").read_text())
    (cell / "result.json").unlink()
    assert main(["sweep", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "1 jobs to run" in printed
    assert (cell / "result.json").is_file()
    assert (cell / "log.txt").read_text().count("== cell job") == 2
    check_report(out, 6, ("accuracy_vs_power",))


def test_ray_sweep_on_a_running_cluster(tmp_path, fashion):
    require_tool(importlib.util.find_spec("ray") is not None, "ray", "pip install -e '.[ray]'")
    import ray

    config = write_config(tmp_path, topologies=["dense"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        proc = subprocess.run([sys.executable, "-m", "eval", "sweep", str(config), "--executor", "ray",
                               "--address", address, "--workers", "2", "--threads", "1"],
                              capture_output=True, text=True, timeout=400, env={**os.environ})
    finally:
        ray.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 cells over 1 models" in proc.stdout
    table = check_report(tmp_path / "out", 2, ("accuracy_vs_power", "accuracy_vs_multiplier"))
    assert [float(r["normalised_power"]) for r in table] == pytest.approx([1.0, 0.2 / 0.425])
    assert not (tmp_path / "out" / "report" / "expert_load.png").exists()  # no MoE model


def test_config_expansion_and_hash(tmp_path):
    config = load_config(write_config(tmp_path, topologies=["hard"], multipliers=["axmoe8"], retrained=["no", "yes"],
                                      retrain_multipliers=["1L2L"]))
    assert len(config.axes["multiplier"]) == 8 and config.axes["multiplier"][0] == "mul8s_1KV6"
    assert config.axes["multiplier"][-1] == "mul8s_1L2L"  # lowest power last
    cells = config.cells()
    assert len(cells) == 9 and cells[-1] == {"arch": "resnet20", "topology": "hard", "multiplier": "mul8s_1L2L",
                                             "retrained": True, "backend": "ort", "compensate": "none"}
    assert config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1}) != config_hash({"a": 2, "b": [2]})


def test_options_map_to_the_commands_flags():
    assert to_argv("train", {"model_opt": {"width": 4}, "augment": False, "moe_layers": [1, 2], "epochs": 3}) == \
        ["--model-opt", "width=4", "--no-augment", "--moe-layers", "1,2", "--epochs", "3"]
    assert to_argv("eval", {"limit": 10, "warmup": 0}) == ["--limit", "10", "--warmup", "0"]


@pytest.mark.parametrize("override, message", [
    ({"colour": 1}, "unknown key 'colour'"),
    ({"train": {"epoch": 1}}, "unknown option 'epoch' (did you mean 'epochs'?)"),
    ({"train": {"out": "x"}}, "out is set by the sweep itself"),
    ({"multipliers": ["mul8s_XXXX"]}, "unknown multiplier"),
    ({"archs": ["resnet21"]}, "unknown 'resnet21'"),
    ({"retrain": {"epochz": 1}}, "unknown option(s) epochz"),
    ({"retrained": ["maybe"]}, "expected yes/no"),
    ({"backends": ["onnx"]}, "backends: unknown 'onnx'"),
    ({"eval": {"backend": "tvm"}}, "backend is set by the sweep itself"),
])
def test_config_errors(tmp_path, override, message, capsys):
    path = write_config(tmp_path, topologies=["dense"], **override)
    with pytest.raises(SweepConfigError, match=None) as info:
        load_config(path)
    assert message in str(info.value)
    assert main(["sweep", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "study"])
def test_shipped_configs_are_valid(name):
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "configs" / f"{name}.yaml")
    assert config.cells() and config.axes["multiplier"][0] == "mul8s_1KV6"


def test_tvm_backend_cells_equal_ort_cells(local_sweep, tmp_path):
    """A `backends: [ort, tvm]` sweep reuses the model job of the ort-only sweep and gets the
    same accuracy and power from TVM (bit-exact integer paths)."""
    require_tool(importlib.util.find_spec("tvm") is not None, "apache-tvm", "pip install -e '.[tvm]'")
    _, out = local_sweep
    model = next(p for p in sorted((out / "jobs").glob("model-*"))
                 if "topology: dense" in (p / "config.yaml").read_text())
    shutil.copytree(model, tmp_path / "out" / "jobs" / model.name)
    config = write_config(tmp_path, topologies=["dense"], multipliers=["mul8s_1L2L"], backends=["ort", "tvm"])
    assert main(["sweep", str(config), "--workers", "2", "--threads", "1"]) == 0
    table = check_report(tmp_path / "out", 2, ("accuracy_vs_power", "accuracy_vs_multiplier"))
    assert list(table[0])[5:7] == ["retrained", "backend"]
    ort, tvm = table
    assert (ort["backend"], tvm["backend"]) == ("ort", "tvm")
    for key in ("top1", "top5", "normalised_power", "active_mmacs_per_image", "fp32_top1"):
        assert ort[key] == tvm[key], key
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "| retrained | backend | top-1 |" in report and "Latency: onnxruntime, TVM, per batch" in report
    log = (tmp_path / "out" / "jobs" / f"cell-{tvm['cell']}" / "log.txt").read_text()
    assert "--backend tvm" in log and "== model job" not in log


def test_backend_flag_is_a_deprecated_alias_of_executor(tmp_path, capsys):
    parser = sweep_args.create_args_parser()
    assert parser.parse_args(["c.yaml"]).executor == "local"
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["c.yaml", "--backend", "ray"]).executor == "ray"
    assert capsys.readouterr().err == sweep_args.DEPRECATED_BACKEND + "\n"
    config = write_config(tmp_path, topologies=["dense"])
    assert main(["sweep", str(config), "--backend", "local", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [sweep_args.DEPRECATED_BACKEND] and "--executor" in captured.err
    assert "2 cells over 1 models" in captured.out
    with pytest.raises(SystemExit, match="--address needs --executor ray"):
        sweep_args.validate(parser.parse_args(["c.yaml", "--address", "127.0.0.1:6379"]))


def test_missing_ray_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ExecutorError, match=r"^--executor ray needs Ray: pip install 'axmoe\[ray\]'$"):
        make_executor("ray", 1)
    config = write_config(tmp_path, topologies=["dense"])
    assert main(["sweep", str(config), "--executor", "ray"]) == 2
    assert capsys.readouterr().err == "error: --executor ray needs Ray: pip install 'axmoe[ray]'\n"
    assert not list((tmp_path / "out").glob("jobs/*"))
