"""Sweep axes (`eval.axes`): cells are the product of the axes' values, each axis enters the
hash of the job its stage belongs to, and an axis at its implicit value changes no job's hash."""

import hashlib
import importlib.util
from pathlib import Path

import pytest
import yaml

from eval import axes
from eval.cli import main
from eval.jobs import job_hash
from eval.sweep import plan
from eval.sweep_config import SweepConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]

# The regression oracle: folder names of configs/demo.yaml's jobs as the code before declarative
# axes computed them (commit daf0b41), hard-coded so that finished demo sweeps stay reusable.
DEMO_MODELS = {"model resnet20/dense": "8be25277f1f1", "model resnet20/hard": "b4e225cc9ef8"}
DEMO_CELLS = [
    ("cell resnet20/dense mul8s_1KV6", "abbed7cc31e5"), ("cell resnet20/dense mul8s_1KV8", "27c12e5ee7a0"),
    ("cell resnet20/dense mul8s_1KV9", "e7f5f79781fe"), ("cell resnet20/dense mul8s_1KVA", "94b7dfb8763e"),
    ("cell resnet20/dense mul8s_1KVM", "31014eb8a32e"), ("cell resnet20/dense mul8s_1KVP", "1818e4cf58ae"),
    ("cell resnet20/dense mul8s_1L2J", "79b6ba14932b"), ("cell resnet20/dense mul8s_1L2L", "0a828ba5e3f3"),
    ("cell resnet20/hard mul8s_1KV6", "9f21b49027e8"), ("cell resnet20/hard mul8s_1KV8", "2c421c9da45c"),
    ("cell resnet20/hard mul8s_1KV9", "89c3388443da"), ("cell resnet20/hard mul8s_1KVA", "f09258d67290"),
    ("cell resnet20/hard mul8s_1KVM", "a42582f64c98"), ("cell resnet20/hard mul8s_1KVP", "52b53064d217"),
    ("cell resnet20/hard mul8s_1L2J", "03dcf8570d1f"), ("cell resnet20/hard mul8s_1L2L", "7fa46a2709cb"),
]
# The same oracle for configs/study.yaml (8 models, 88 cells, retrained ones among them): SHA-1
# of its job folder names in plan order, joined by spaces.
STUDY_JOBS = (8, 88, "7880c1c593e19861115562b3a9b4eaadd6bbb41d")


def write(tmp_path: Path, name: str = "sweep.yaml", **keys) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"archs": ["resnet20"], "topologies": ["dense", "hard"],
                                    "multipliers": ["mul8s_1L2L", "mul8s_1KV6"], "out": str(tmp_path / "out"),
                                    **keys}))
    return path


def folders(path: Path) -> list[str]:
    models, cells = plan(load_config(path, check=False))
    return [job.folder.name for job in [*models.values(), *cells]]


def test_demo_job_hashes_are_those_of_finished_sweeps():
    models, cells = plan(load_config(ROOT / "configs" / "demo.yaml", check=False))
    assert {job.label: job.hash for job in models.values()} == DEMO_MODELS
    assert [(job.label, job.hash) for job in cells if job.cell["compensate"] == "none"] == DEMO_CELLS


def test_study_job_hashes_are_those_of_finished_sweeps():
    models, cells = plan(load_config(ROOT / "configs" / "study.yaml", check=False))
    names = " ".join(job.folder.name for job in [*models.values(), *cells])
    assert (len(models), len(cells), hashlib.sha1(names.encode()).hexdigest()) == STUDY_JOBS


def test_cells_are_the_product_of_the_axes(tmp_path):
    config = load_config(write(tmp_path, retrained=["no", "yes"], backends=["ort", "tvm"]), check=False)
    cells = config.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    assert all(list(cell) == [a.name for a in axes.AXES] for cell in cells)
    # the series axis (multiplier) varies fastest, the others nest in declaration order
    assert [c["multiplier"] for c in cells[:4]] == ["mul8s_1KV6", "mul8s_1L2L"] * 2
    assert [c["backend"] for c in cells[:4]] == ["ort", "ort", "tvm", "tvm"]
    assert [c["retrained"] for c in cells[::4]] == [False, True, False, True]
    assert [c["topology"] for c in cells[::8]] == ["dense", "hard"]
    assert len({tuple(c.values()) for c in cells}) == len(cells)


def test_omitted_axes_take_their_defaults(tmp_path):
    config = load_config(write(tmp_path), check=False)
    assert config.axes["retrained"] == (False,) and config.axes["backend"] == ("ort",)
    assert [a.name for a in config.swept()] == ["arch", "topology", "multiplier", "retrained"]
    assert "backends" not in config.resolved()
    with pytest.raises(SweepConfigError, match="multipliers: required"):
        load_config(write(tmp_path, multipliers=None), check=False)


def test_each_axis_enters_the_hash_of_its_stage_job():
    assert [(a.name, a.job) for a in axes.AXES] == [
        ("arch", "model"), ("topology", "model"), ("multiplier", "cell"), ("retrained", "cell"), ("backend", "cell"),
        ("compensate", "cell")]
    cell = {"arch": "resnet20", "topology": "hard", "multiplier": "mul8s_1L2L", "retrained": True, "backend": "tvm",
            "compensate": "none"}
    assert axes.spec_of(cell, "model") == {"arch": "resnet20", "topology": "hard"}
    assert axes.spec_of(cell, "cell") == {"multiplier": "mul8s_1L2L", "retrained": True, "backend": "tvm"}
    assert axes.spec_of({**cell, "backend": "ort"}, "cell") == {"multiplier": "mul8s_1L2L", "retrained": True}
    assert axes.options({"backend": "tvm"}, "eval") == {"backend": "tvm"}
    assert axes.options({}, "eval") == {} and axes.options({"backend": "tvm"}, "train") == {}
    assert axes.tags(cell, "cell") == ["mul8s_1L2L", "retrained", "tvm"]
    assert axes.tags({**cell, "retrained": False, "backend": "ort"}, "cell") == ["mul8s_1L2L"]
    with pytest.raises(ValueError, match="stage 'deploy' is not one of"):
        axes.Axis("target", "targets", "deploy", lambda values, key: tuple(values))


def test_an_axis_at_its_implicit_value_changes_no_hash(tmp_path):
    before = folders(write(tmp_path))
    assert folders(write(tmp_path, backends=["ort"])) == before
    models, cells = plan(load_config(write(tmp_path, backends=["ort", "tvm"]), check=False))
    assert [job.folder.name for job in models.values()] == before[:2]  # the models are shared
    ort = [job for job in cells if job.cell["backend"] == "ort"]
    tvm = [job for job in cells if job.cell["backend"] == "tvm"]
    assert [job.folder.name for job in ort] == before[2:]
    assert all(job.spec["backend"] == "tvm" and job.label.endswith(" tvm") for job in tvm)
    assert {job.hash for job in tvm}.isdisjoint(job.hash for job in ort)
    assert [job_hash({k: v for k, v in job.spec.items() if k != "backend"}) for job in tvm] == \
        [job.hash for job in ort]


def test_backend_axis_checks_its_values(tmp_path, capsys):
    with pytest.raises(SweepConfigError, match=r"backends: unknown 'onnx' \(valid: ort, tvm\)"):
        load_config(write(tmp_path, backends=["onnx"]), check=False)
    path = write(tmp_path, backends=["ort", "tvm"], eval={"backend": "ort"})
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "error: eval: backend is set by the sweep itself"


def test_tvm_backend_needs_tvm_at_config_load(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tvm" else find_spec(name, *a))
    path = write(tmp_path, topologies=["dense"], backends=["ort", "tvm"])
    with pytest.raises(SweepConfigError, match=r"backends: tvm needs TVM, which is not installed here"):
        load_config(path)
    assert load_config(write(tmp_path, "ort.yaml", topologies=["dense"])).axes["backend"] == ("ort",)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: backends: tvm needs TVM") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # failed before writing anything


def test_compensate_axis_parses_and_enters_the_cell_hash_only_when_not_none(tmp_path):
    before = folders(write(tmp_path))
    assert load_config(write(tmp_path), check=False).axes["compensate"] == ("none",)
    assert folders(write(tmp_path, compensate=["none"])) == before
    assert folders(write(tmp_path, compensate="none")) == before
    config = load_config(write(tmp_path, compensate=["none", "weights+bias", "none"]), check=False)
    assert config.axes["compensate"] == ("none", "weights+bias")
    assert [a.name for a in config.swept()] == ["arch", "topology", "multiplier", "retrained", "compensate"]
    assert config.resolved()["compensate"] == ["none", "weights+bias"]
    models, cells = plan(config)
    assert [job.folder.name for job in models.values()] == before[:2]
    plain = [job for job in cells if job.cell["compensate"] == "none"]
    tuned = [job for job in cells if job.cell["compensate"] == "weights+bias"]
    assert [job.folder.name for job in plain] == before[2:]
    assert all("compensate" not in job.spec for job in plain)
    assert all(job.spec["compensate"] == "weights+bias" and job.label.endswith(" compensate weights+bias")
               for job in tuned)
    assert [job_hash({k: v for k, v in job.spec.items() if k != "compensate"}) for job in tuned] == \
        [job.hash for job in plain]
    assert axes.options(tuned[0].spec, "pass") == {"compensate": "weights+bias"}
    assert axes.options(plain[0].spec, "pass") == {}


@pytest.mark.parametrize("value, fragment", [
    ("weights+bais", "compensate: unknown 'weights+bais' (did you mean 'weights+bias'?)"),
    ("Linear", "compensate: unknown 'Linear' (did you mean 'linear'?)"),
])
def test_compensate_axis_checks_its_values(tmp_path, value, fragment):
    with pytest.raises(SweepConfigError) as exc:
        load_config(write(tmp_path, compensate=["none", value]), check=False)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_demo_sweeps_compensation(tmp_path):
    """configs/demo.yaml adds a compensated curve per topology; its uncompensated cells are
    the pinned ones (test_demo_job_hashes_are_those_of_finished_sweeps)."""
    config = load_config(ROOT / "configs" / "demo.yaml", check=False)
    assert config.axes["compensate"] == ("none", "weights+bias")
    _, cells = plan(config)
    assert len(cells) == 2 * len(DEMO_CELLS)
