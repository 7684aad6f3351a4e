"""The command line: a real `python -m jaxnets.train` smoke run, --resume (damaged checkpoints included), one-line
errors with exit status 2 for bad flags and 1 for failures while running, --debug."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
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


@pytest.mark.slow
def test_smoke_run_in_a_subprocess(smoke_run):
    result, out = smoke_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr
    assert "epoch 1/1: train loss" in result.stdout
    assert "final validation accuracy:" in result.stdout and "/20 held-out examples of mnist-sample" in result.stdout
    assert f"run directory: {out}" in result.stdout
    for name in ("config.json", "history.json", "curves.png", "checkpoints/"):
        assert f"  {name}" in result.stdout
        assert os.path.exists(out / name.rstrip("/"))
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["optimizer"], config["lr"], config["subset"]) == ("lenet5", "sgd", 0.05, 200)
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 1


@pytest.mark.slow
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
    (["--lr", "-1"], 2, "--lr must be >= 0, got -1.0"),
    (["--lr", "nan"], 2, "argument --lr: must be a finite number, got 'nan'"),
    (["--momentum", "inf"], 2, "argument --momentum: must be a finite number, got 'inf'"),
    (["--val-fraction", "x"], 2, "argument --val-fraction: invalid number: 'x'"),
    (["--out", "{tmp}/file"], 2, "is an existing file; --out names the run directory"),
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
    (tmp_path / "file").write_text("not a directory")
    if "--resume" not in argv and "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.err.startswith("jaxnets-train: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "run").exists()  # nothing was started


def test_help_exits_zero_and_is_formatted(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--subset" in out and "--debug" in out
    assert "10 epochs (the README gives the measured accuracy)" in out  # the description, printed as is
    assert "(default: " in out and "%(" not in out  # help strings %-formatted


def test_flag_choices_come_from_the_library():
    from jaxnets import models
    from jaxnets.train import cli, optim, parallel, precision

    parser = cli.build_parser()
    choices = {action.dest: action.choices for action in parser._actions if action.choices}
    assert choices["model"] == models.available() and tuple(choices["optimizer"]) == optim.OPTIMIZERS
    assert tuple(choices["precision"]) == precision.DTYPES
    assert tuple(choices["parallel"]) == ("auto", *parallel.MODES)


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------------------
# Runs that fail while running: exit status 1, one line; --debug adds the traceback
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A run of two epochs (checkpoints 1 and 2), made in-process; tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["--epochs", "2", "--out", str(out), *QUICK]) == 0
    return out


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def _flip_data_file(epoch_dir) -> None:
    """Invert 64 bytes at a quarter, half and three quarters of the largest file under `<epoch>/state/`
    (orbax's array data, zstd frames: the damage reads back as other values or as a broken frame)."""
    files = [os.path.join(root, name) for root, _, names in os.walk(epoch_dir / "state") for name in names]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    for start in (len(data) // 4, len(data) // 2, 3 * len(data) // 4):
        data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    open(path, "wb").write(bytes(data))


def _lines(err: str) -> list[str]:
    lines = err.splitlines()
    assert lines and all(line.startswith("jaxnets-train: ") for line in lines), err
    assert "Traceback" not in err
    return lines


def test_resume_with_no_intact_checkpoint_fails_in_one_line(two_epochs, tmp_path, capsys):
    out = _copy(two_epochs, tmp_path)
    for epoch in (1, 2):
        _flip_data_file(out / "checkpoints" / str(epoch))
    capsys.readouterr()
    assert main(["--epochs", "3", "--out", str(out), "--resume", *QUICK]) == 1
    lines = _lines(capsys.readouterr().err)
    assert lines[-1].startswith("jaxnets-train: error: ") and "the checkpoint of epoch 2, " in lines[-1]
    assert (f"{os.sep}checkpoints{os.sep}2', is corrupted: the array" in lines[-1]
            or f"{os.sep}checkpoints{os.sep}2', has unreadable arrays under state/: " in lines[-1])
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 2  # nothing trained


def test_resume_falls_back_to_the_intact_earlier_epoch(two_epochs, tmp_path, capsys):
    out = _copy(two_epochs, tmp_path)
    _flip_data_file(out / "checkpoints" / "2")
    capsys.readouterr()
    assert main(["--epochs", "3", "--out", str(out), "--resume", *QUICK]) == 0
    lines = _lines(capsys.readouterr().err)
    assert any(line.startswith("jaxnets-train: warning: ") and "Skipping epoch 2; trying epoch 1." in line
               for line in lines), lines
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 3  # epochs 2 and 3 trained again from epoch 1
    assert sorted(os.listdir(out / "checkpoints")) == ["1", "2", "2.corrupt", "3"]


@pytest.mark.parametrize("text", ["{", "[1, 2]"])
def test_unreadable_config_json_names_the_file(two_epochs, tmp_path, capsys, text):
    out = _copy(two_epochs, tmp_path)
    (out / "config.json").write_text(text)
    capsys.readouterr()
    assert main(["--epochs", "3", "--out", str(out), "--resume", *QUICK]) == 1
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith(f"jaxnets-train: error: --resume: ") and repr(str(out / "config.json")) in line


def test_debug_adds_the_traceback_and_bugs_are_named(tmp_path, capsys, monkeypatch):
    from jaxnets.train import cli

    def broken(args):
        raise KeyError("num_classes")

    monkeypatch.setattr(cli, "_load", broken)
    argv = ["--out", str(tmp_path / "run"), *QUICK]
    assert main(argv) == 1
    (line,) = _lines(capsys.readouterr().err)
    assert line == "jaxnets-train: error: KeyError: 'num_classes' (run with --debug for the traceback)"
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.splitlines()[-1] == "jaxnets-train: error: KeyError: 'num_classes'"


def test_num_classes_comes_from_the_dataset(tmp_path, monkeypatch):
    """A dataset of 3 classes trains a 3-way classifier (the checkpoint records the last layer's shape)."""
    from jaxnets import data

    sample = data.mnist_sample()
    keep = sample["label"] < 3
    monkeypatch.setattr(data, "mnist_sample", lambda: {k: v[keep] for k, v in sample.items()})
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), *QUICK]) == 0
    record = json.loads((out / "checkpoints" / "1" / "meta" / "metadata").read_text())["__checksums__"]["arrays"]
    biases = {name: entry["shape"] for name, entry in record.items() if name.startswith("params/") and
              name.endswith("/bias")}
    assert [3] in biases.values() and [10] not in biases.values(), biases  # LeNet-5: 6, 16, 120, 84, classes


# ------------------------------------------------------------------------------------------------
# Subcommands on a trained run: evaluate, predict (on a copy of the two-epoch run)
# ------------------------------------------------------------------------------------------------
def test_config_json_records_format_version_and_dataset(two_epochs):
    import jaxnets
    from jaxnets.train.cli import CONFIG_FORMAT

    config = json.loads((two_epochs / "config.json").read_text())
    assert config["format"] == CONFIG_FORMAT == 2 and config["jaxnets_version"] == jaxnets.__version__
    assert config["image_shape"] == [28, 28, 1] and config["num_classes"] == 10


@pytest.mark.parametrize("epoch", [[], ["--epoch", "1"], ["--epoch", "best"]])
def test_evaluate_prints_loss_accuracy_and_top5(two_epochs, capsys, epoch):
    from jaxnets import data
    from jaxnets.train import load_run

    capsys.readouterr()
    assert main(["evaluate", str(two_epochs), "--batch-size", "7", *epoch]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    run = load_run(two_epochs, epoch=int(epoch[1]) if epoch[1:] == ["1"] else (epoch[1] if epoch else "latest"))
    full = data.mnist_sample()
    _, subset = data.split(full, 200 / len(full["label"]), seed=0)  # QUICK: --subset 200, 10% held out
    result = run.evaluate(data.split(subset, 0.1, seed=0)[1])
    assert out == (f"{two_epochs}, epoch {run.epoch}, on the held-out validation split of mnist-sample (20 images): "
                   f"loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/20), "
                   f"top-5 {100 * result['top5']:.2f}%\n")


def test_predict_prints_top_k_classes_of_image_files(two_epochs, tmp_path, capsys):
    from PIL import Image

    from jaxnets import data
    from jaxnets.train import load_run

    digits = data.mnist_sample()["image"][:3]
    paths = []
    for i, digit in enumerate(digits):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(digit[..., 0]).save(paths[-1])
    Image.fromarray(np.repeat(digits[0], 3, axis=-1)).resize((56, 56)).save(tmp_path / "big.jpg")
    capsys.readouterr()
    assert main(["predict", str(two_epochs), *paths, "--top-k", "3"]) == 0
    out, err = capsys.readouterr()
    logits = load_run(two_epochs).predict(digits)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    lines = out.splitlines()
    assert len(lines) == 3 and err == ""
    for path, line, p in zip(paths, lines, probs):
        top = np.argsort(-p)[:3]
        assert line == f"{path}: " + ", ".join(f"{c} ({100 * p[c]:.1f}%)" for c in top)
    # An RGB file of another size: converted to grey, resized, with a one-line warning.
    assert main(["predict", str(two_epochs), str(tmp_path / "big.jpg")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{tmp_path / 'big.jpg'}: ") and out.count("%") == 5
    assert err == f"jaxnets-train: warning: predict: {tmp_path / 'big.jpg'} is 56x56; resized to the run's 28x28\n"


@pytest.mark.parametrize("argv, status, message", [
    (["evaluate"], 2, "the following arguments are required: RUN_DIR (see jaxnets-train evaluate --help)"),
    (["evaluate", "{run}", "--epoch", "last"], 2, "argument --epoch: must be 'latest', 'best' or an epoch number"),
    (["evaluate", "{run}", "--batch-size", "0"], 2, "--batch-size must be > 0, got 0"),
    (["evaluate", "{run}", "--dataset", "cifar10"], 2, "--dataset cifar10 needs --data-dir"),
    (["evaluate", "{run}", "--epoch", "9"], 1, "load_run: no checkpoint of epoch 9"),
    (["evaluate", "{tmp}"], 1, "config.json' is missing"),
    (["predict", "{run}"], 2, "the following arguments are required: FILE (see jaxnets-train predict --help)"),
    (["predict", "{run}", "{tmp}/missing.png"], 1, "predict: cannot read the image '{tmp}/missing.png': "),
    (["predict", "{run}", "{tmp}/text.png"], 1, "predict: cannot read the image '{tmp}/text.png': cannot identify"),
    (["predict", "{run}", "{tmp}/text.png", "--top-k", "0"], 2, "--top-k must be > 0, got 0"),
])
def test_subcommand_errors_are_one_line(two_epochs, tmp_path, capsys, argv, status, message):
    (tmp_path / "text.png").write_text("not an image")
    fill = lambda a: a.replace("{run}", str(two_epochs)).replace("{tmp}", str(tmp_path))  # noqa: E731
    capsys.readouterr()
    assert main([fill(a) for a in argv]) == status
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith("jaxnets-train: error: ") and fill(message) in line, line


def test_evaluate_of_a_damaged_run_names_the_checkpoint(two_epochs, tmp_path, capsys):
    out = _copy(two_epochs, tmp_path)
    _flip_data_file(out / "checkpoints" / "2")
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 1
    (line,) = _lines(capsys.readouterr().err)
    assert "the checkpoint of epoch 2, " in line and f"{os.sep}checkpoints{os.sep}2'" in line
    assert main(["evaluate", str(out), "--epoch", "1"]) == 0  # the intact epoch still loads


def test_subcommand_help_and_training_still_parse(capsys):
    assert main(["evaluate", "--help"]) == 0 and "usage: jaxnets-train evaluate" in capsys.readouterr().out
    assert main(["predict", "--help"]) == 0 and "--top-k" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "--model" in capsys.readouterr().out  # no subcommand: the training flags
