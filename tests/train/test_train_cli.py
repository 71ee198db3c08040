"""`python -m train`: the real entry point, its help, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from train.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_smoke_run_through_the_entry_point(tiny_args, tmp_path):
    out = tmp_path / "hard"
    command = [sys.executable, "-m", "train", *tiny_args("--topology", "hard", "--max-steps", "2",
                                                         "--device", "auto", out=out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0 <= metrics["test_acc"] <= 1 and metrics["test_samples"] == 32
    assert metrics["config"]["topology"] == "hard"
    assert sum(metrics["last_epoch"]["test_expert_load"]["stages.2"]) == 32
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events == ["start", "step", "epoch", "final"]
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["format"] == "axmoe.checkpoint/1" and checkpoint["step"] == 2
    model = models.create(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["data"]["dataset"] == "fashion-mnist" and checkpoint["data"]["image_size"] == 32


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--arch", "--topology", "--dataset", "--epochs", "--out", "--batch-size", "--lr",
                 "--schedule", "--seed", "--experts", "--top-k", "--max-steps", "--resume", "--device",
                 "--init-from", "--dense-epochs", "--model-opt", "--data-dir", "--config"):
        assert flag in text
    assert "resnet20" in text and "cluster" in text and "onecycle" in text


@pytest.mark.parametrize("argv, fragment", [
    (["--arch", "resnet21"], "unknown arch 'resnet21'; did you mean 'resnet20'?"),
    (["--topology", "sparse"], "unknown topology 'sparse'"),
    (["--dataset", "cifar10"], "unknown dataset 'cifar10'"),
    (["--dataset", "cifar100"], "CIFAR-100 not found"),
    (["--top-k", "5"], "--top-k 5 exceeds --experts 4"),
    (["--model-opt", "widht=8"], "did you mean 'width'"),
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
])
def test_user_mistakes_are_one_line_errors(argv, fragment, tiny_args, tmp_path, capsys):
    base = tiny_args()
    args = base + argv
    if "--dataset" in argv and argv[1] == "cifar100":
        args[args.index("--data-dir") + 1] = str(tmp_path / "empty")
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err and "Traceback" not in err


def test_bad_checkpoints_are_one_line_errors(tiny_args, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, plain)
    for path, fragment in ((garbage, "not a loadable checkpoint"), (plain, "not an axmoe checkpoint"),
                           (tmp_path / "missing", "no checkpoint at")):
        with pytest.raises(SystemExit) as info:
            main(tiny_args("--resume", str(path)))
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_missing_required_flags(capsys):
    for argv, fragment in ((["--out", "x"], "--arch is required"), (["--arch", "resnet20"], "--out")):
        with pytest.raises(SystemExit):
            main(argv)
        assert fragment in capsys.readouterr().err


def test_config_file_sets_defaults(tiny_args, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("max_steps: 1\nseed: 4\n")
    main(tiny_args("--config", str(config)))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 1
    config.write_text("max_stepz: 1\n")
    with pytest.raises(SystemExit):
        main(tiny_args("--config", str(config)))
    assert "did you mean 'max_steps'" in capsys.readouterr().err
