"""The command line: a real `python -m jaxnets.train` smoke run, --resume, and one-line errors for bad flags."""
import json
import os
import subprocess
import sys

import pytest

from jaxnets.train.cli import main

# One short epoch on a stratified 200-example subset (180 train / 20 validation) keeps the runs fast.
QUICK = ["--subset", "200", "--batch-size", "30", "--no-progress"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "jaxnets.train", "--epochs", "1", "--out", str(out), *QUICK],
                            capture_output=True, text=True, timeout=300, env=env)
    return result, out


def test_smoke_run_in_a_subprocess(smoke_run):
    result, out = smoke_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "epoch 1/1: train loss" in result.stdout
    assert "final validation accuracy:" in result.stdout and "/20 held-out examples of mnist-sample" in result.stdout
    assert f"run directory: {out}" in result.stdout
    for name in ("config.json", "history.json", "curves.png", "checkpoints/"):
        assert f"  {name}" in result.stdout
        assert os.path.exists(out / name.rstrip("/"))
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["optimizer"], config["lr"], config["subset"]) == ("lenet5", "sgd", 0.05, 200)
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 1


def test_resume_continues_the_run(smoke_run, capsys):
    _, out = smoke_run
    assert main(["--epochs", "2", "--out", str(out), "--resume", *QUICK]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 2
    assert "epoch 2/2" in capsys.readouterr().out
    # Resuming with different training flags is refused in one line.
    assert main(["--epochs", "3", "--out", str(out), "--resume", "--lr", "0.1", *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr 0.05 (now 0.1)" in err
    # A new run into an existing run directory is refused too.
    assert main(["--epochs", "1", "--out", str(out), *QUICK]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, status, message", [
    (["--model", "nope"], 2, "argument --model: invalid choice: 'nope'"),
    (["--optimizer", "sgdd"], 2, "argument --optimizer: invalid choice: 'sgdd'"),
    (["--lr", "-0.1"], 2, "--lr must be >= 0, got -0.1"),
    (["--batch-size", "5000"], 2, "--batch-size 5000 is larger than the 4500 training examples"),
    (["--epochs", "0"], 2, "--epochs must be > 0, got 0"),
    (["--epochs", "two"], 2, "argument --epochs: invalid int value: 'two'"),
    (["--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    (["--dataset", "cifar10"], 2, "--dataset cifar10 needs --data-dir"),
    (["--resume"], 2, "--resume needs --out"),
    (["--optimizer", "adam", "--momentum", "0.9"], 2, "--momentum applies to sgd and rmsprop"),
    (["--dataset", "mnist", "--data-dir", "{tmp}"], 1, "load_mnist"),
    (["--precision", "float64"], 2, "argument --precision: invalid choice: 'float64'"),
])
def test_bad_flags_give_one_line_and_non_zero_exit(argv, status, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--resume" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.err.startswith("jaxnets-train: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "run").exists()  # nothing was started


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "--subset" in capsys.readouterr().out


def test_bfloat16_run_trains_and_is_recorded(tmp_path, capsys):
    """--precision bfloat16 trains (3 epochs on 450 digits: float32 measured 52% validation accuracy and train
    loss 2.30 -> 2.19, bfloat16 56% and 2.30 -> 2.19) and config.json records it, so a resume in another
    precision is refused."""
    out = tmp_path / "run"
    flags = ["--subset", "500", "--batch-size", "30", "--schedule", "constant", "--no-progress"]
    assert main(["--epochs", "3", "--out", str(out), "--precision", "bfloat16", *flags]) == 0
    accuracy = float(capsys.readouterr().out.split("final validation accuracy: ")[1].split("%")[0])
    assert accuracy > 30.0  # chance is 10%
    train_loss = json.loads((out / "history.json").read_text())["train_loss"]
    assert train_loss[-1] < train_loss[0] - 0.05
    assert json.loads((out / "config.json").read_text())["precision"] == "bfloat16"
    assert main(["--epochs", "4", "--out", str(out), "--resume", *flags]) == 2
    assert "--precision bfloat16 (now float32)" in capsys.readouterr().err
