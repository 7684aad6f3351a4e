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
from jaxnets.train.history import History

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
    assert "seeds" not in config and "label_smoothing" not in config  # a single run's config.json as before sweeps
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
    assert line.startswith("jaxnets-train: error: --resume: ") and repr(str(out / "config.json")) in line


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
# Sweeps: --seeds and comma lists of --lr, --momentum, --weight-decay, --label-smoothing
# ------------------------------------------------------------------------------------------------
def _args(*argv):
    from jaxnets.train import cli

    args = cli.build_parser().parse_args(list(argv))
    cli._check(args)
    return args


def test_sweep_flags_parse_into_seeds_and_a_grid_in_flag_order():
    from jaxnets.train.cli import sweep_grid

    args = _args("--weight-decay", "0,5e-4", "--seeds", "3", "--lr", "0.01,0.1", "--momentum", "0.9")
    assert args.momentum == 0.9 and isinstance(args.momentum, float)  # one value: one setting, no grid axis
    assert sweep_grid(args) == ([0, 1, 2], {"learning_rate": [0.01, 0.1], "weight_decay": [0.0, 5e-4]})
    assert list(sweep_grid(args)[1]) == ["learning_rate", "weight_decay"]  # SWEEP_FLAGS order, not argv order
    assert sweep_grid(_args("--seeds", "4,0,7"))[0] == [4, 0, 7]
    assert sweep_grid(_args("--label-smoothing", "0,0.1")) == (None, {"label_smoothing": [0.0, 0.1]})


def test_single_values_keep_the_single_run():
    from jaxnets.train.cli import sweep_grid

    args = _args("--lr", "0.1", "--weight-decay", "5e-4", "--label-smoothing", "0.1")
    assert sweep_grid(args) == (None, None)
    assert (args.lr, args.weight_decay, args.label_smoothing, args.seeds) == (0.1, 5e-4, 0.1, None)
    assert _args().lr == 0.05 and sweep_grid(_args()) == (None, None)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0.1,,0.2"], "argument --lr: empty item in the list '0.1,,0.2'"),
    (["--lr", "0.1,"], "argument --lr: empty item in the list '0.1,'"),
    (["--weight-decay", "0,0.0"], "argument --weight-decay: 0 appears twice in the list '0,0.0'"),
    (["--momentum", "0.9,abc"], "argument --momentum: invalid number: 'abc'"),
    (["--lr", "0.1,nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["--lr", "0.1,-0.2"], "--lr must be >= 0, got -0.2"),
    (["--label-smoothing", "0,1.5"], "--label-smoothing must be in [0, 1], got 1.5"),
    (["--seeds", "0"], "argument --seeds: the number of seeds must be >= 1, got 0"),
    (["--seeds", "-2"], "argument --seeds: the number of seeds must be >= 1, got -2"),
    (["--seeds", "1,-1"], "argument --seeds: seeds must be >= 0, got -1 in '1,-1'"),
    (["--seeds", "1,2,1"], "argument --seeds: seed 1 appears twice in the list '1,2,1'"),
    (["--seeds", "0,,1"], "argument --seeds: empty item in the list '0,,1'"),
    (["--seeds", "2.5"], "argument --seeds: expected a number of seeds or a comma list of seeds (ints), got '2.5'"),
    (["--seeds", "3", "--seed", "1"], "--seed 1 and --seeds: --seed sets a single run's seed"),
    (["--optimizer", "adam", "--momentum", "0.8,0.9"], "--momentum applies to sgd and rmsprop"),
])
def test_bad_sweep_flags_give_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxnets-train: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, hp", [
    (["--lr", "0.01,0.1", "--weight-decay", "0,5e-4"], {"learning_rate": 0.1, "weight_decay": 5e-4}),
    (["--momentum", "0.5,0.9", "--schedule", "step"], {"momentum": 0.5}),
    (["--optimizer", "adamw", "--lr", "1e-3,3e-3", "--schedule", "constant"], {"learning_rate": 3e-3}),
])
def test_member_optimizer_is_the_single_runs_optimizer_with_the_members_values(argv, hp):
    """The optimizer built for a member equals the one of a single run with those flags: same state, same updates
    (bitwise, three steps of the schedule)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnets.train import cli

    args = _args(*argv, "--epochs", "4")
    flags = {"learning_rate": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay"}
    single_argv = [a for a in argv if "," not in a and a not in flags.values()]
    for name, flag in flags.items():
        grid = getattr(args, {"learning_rate": "lr"}.get(name, name))
        value = hp.get(name, grid if not isinstance(grid, list) else None)
        if value is not None:
            single_argv += [flag, repr(value)]
    single = _args(*single_argv, "--epochs", "4")
    expected = cli._optimizer(single, cli._schedule(single, 2))
    built = cli.member_optimizer(args, 2)({**hp, "label_smoothing": 0.1})  # other names are not the optimizer's
    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.2])}
    states = [built.init(params), expected.init(params)]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
    for step in range(3):
        grads = jax.tree.map(lambda p: jnp.sin(p * (step + 1)), params)
        (u0, states[0]), (u1, states[1]) = built.update(grads, states[0], params), expected.update(grads, states[1], params)
        for a, b in zip(jax.tree.leaves(u0), jax.tree.leaves(u1)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        params = jax.tree.map(lambda p, u: p + u, params, u0)
    assert any(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(u0))  # the updates were not all zero
    def two_steps(tx):
        state, updates = tx.init(params), None
        for step in range(2):  # two: SGD's first step does not depend on the momentum (torch's buffer = grad)
            updates, state = tx.update(jax.tree.map(lambda p: jnp.cos(p + step), params), state, params)
        return jax.tree.leaves(updates)

    other = cli.member_optimizer(args, 2)({k: (v * 0.5 if k != "momentum" else 0.9) for k, v in hp.items()})
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))  # another member's values give other updates
               for a, b in zip(two_steps(other), two_steps(built)))


def test_member_optimizer_takes_traced_hyperparameters():
    """Under vmap over the members' learning rates (as a population may build it) each member's updates equal the
    optimizer built with its concrete value."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnets.train import cli

    build = cli.member_optimizer(_args("--lr", "0.01,0.1", "--weight-decay", "0,5e-4", "--epochs", "3"), 4)
    params = {"w": jnp.array([0.5, -1.0, 2.0])}
    grads = {"w": jnp.array([0.3, 0.2, -0.1])}

    def two_updates(lr, wd):
        tx = build({"learning_rate": lr, "weight_decay": wd})
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        return tx.update(grads, state, params)[0]["w"]

    lrs, wds = jnp.array([0.01, 0.1]), jnp.array([0.0, 5e-4])
    stacked = jax.vmap(two_updates)(lrs, wds)
    for r in range(2):
        np.testing.assert_allclose(stacked[r], two_updates(float(lrs[r]), float(wds[r])), rtol=1e-6, atol=0)
    assert not np.allclose(stacked[0], stacked[1])


def _hand_population():
    runs = [{"seed": s, "learning_rate": lr} for lr in (0.01, 0.1) for s in (0, 1)]
    return History(train_loss=[[1.0, 1.2, 0.8, 0.9]], train_error=[[0.4, 0.5, 0.3, 0.35]],
                   val_loss=[[1.1, 1.3, 0.7, 0.75]], val_error=[[0.30, 0.34, 0.20, 0.26]],
                   images_per_sec=[4000.0], wall_time=[2.5], best_epoch=[1] * 4, stopped_early=[False] * 4,
                   runs=runs, diverged=[None] * 4)


def test_sweep_report_is_the_summary_table():
    from jaxnets.train.cli import sweep_report

    text = sweep_report(_hand_population(), _args("--seeds", "2", "--lr", "0.01,0.1"), 12.34)
    assert text.splitlines() == [
        "sweep of 4 members (2 grid points x 2 seeds); 12.3 s",
        "val_error (%) at the final epoch over seeds: mean +- standard error, 95% CI (Student t)",
        "learning_rate  n  val_error (%)  95% CI           diverged",
        "0.01           2  32.00 +- 2.00  [6.59, 57.41]           0",
        "0.1            2  23.00 +- 3.00  [-15.12, 61.12]         0"]
    with_patience = sweep_report(_hand_population(), _args("--seeds", "2", "--patience", "2"), 1.0)
    assert "at the best epoch" in with_patience


def test_sweep_epoch_line_shows_best_median_worst_member():
    from jaxnets.train.cli import sweep_epoch_line

    line = sweep_epoch_line(10, 1, _hand_population())
    assert line == ("epoch 1/10: train best 0.8000 (70.0%), median 0.9000 (65.0%), worst 1.2000 (50.0%) of 4 | "
                    "val best 0.7000 (80.0%), median 0.7500 (74.0%), worst 1.3000 (66.0%) of 4 | 4000 img/s | 2.5 s")


def test_sweep_run_passes_the_grid_to_fit_and_prints_the_table(tmp_path, capsys, monkeypatch):
    """The command's plumbing with fit replaced: the keywords it gets, the line per epoch, the table, config.json."""
    from jaxnets.train import cli

    calls = []

    def fake_fit(model, train, **kwargs):
        calls.append(kwargs)
        history = _hand_population() if "seeds" in kwargs else History(
            train_loss=[1.0], train_error=[0.5], val_loss=[1.0], val_error=[0.25], images_per_sec=[1.0], wall_time=[1.0])
        kwargs["on_epoch_end"](1, history)
        return None, history

    monkeypatch.setattr(cli, "fit", fake_fit)
    out = tmp_path / "run"
    argv = ["--epochs", "1", "--out", str(out), "--seeds", "2", "--lr", "0.01,0.1", "--label-smoothing", "0.1", *QUICK]
    assert main(argv) == 0
    (kwargs,) = calls
    assert kwargs["seeds"] == [0, 1] and kwargs["hparams"] == {"learning_rate": [0.01, 0.1]}
    assert kwargs["learning_rate"] is None and callable(kwargs["optimizer"]) and "seed" not in kwargs
    assert kwargs["loss_fn"].keywords == {"label_smoothing": 0.1}  # a single value: the loss of every member
    printed = capsys.readouterr().out
    assert "epoch 1/1: train best 0.8000 (70.0%), median 0.9000 (65.0%), worst 1.2000 (50.0%) of 4 | val " in printed
    assert "sweep of 4 members (2 grid points x 2 seeds)" in printed and "0.1            2  23.00 +- 3.00" in printed
    assert "final validation accuracy" not in printed and f"run directory: {out}" in printed
    config = json.loads((out / "config.json").read_text())
    assert (config["seeds"], config["lr"], config["label_smoothing"]) == ([0, 1], [0.01, 0.1], 0.1)
    calls.clear()
    assert main(["--epochs", "1", "--out", str(tmp_path / "single"), "--lr", "0.1", *QUICK]) == 0  # a single run ...
    assert "seeds" not in calls[0] and "hparams" not in calls[0] and "loss_fn" not in calls[0]  # ... as before
    assert "final validation accuracy: 75.00% (15/20 held-out" in capsys.readouterr().out
    assert calls[0]["learning_rate"] is not None and hasattr(calls[0]["optimizer"], "update")


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path, capsys):
    """Two seeds x two learning rates, one epoch, as one population (needs the population core: fit's seeds= and
    hparams=)."""
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), "--seeds", "2", "--lr", "0.01,0.1", *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1: train best " in printed and "sweep of 4 members (2 grid points x 2 seeds)" in printed
    table = printed.split("95% CI (Student t)\n")[1].splitlines()
    assert table[0].split() == ["learning_rate", "n", "val_error", "(%)", "95%", "CI", "diverged"]
    assert table[1].startswith("0.01 ") and table[2].startswith("0.1 ") and " +- " in table[1]
    config = json.loads((out / "config.json").read_text())
    assert config["seeds"] == [0, 1] and config["lr"] == [0.01, 0.1] and "label_smoothing" not in config
    history = History.from_json((out / "history.json").read_text())
    assert history.runs == [{"seed": s, "learning_rate": lr} for lr in (0.01, 0.1) for s in (0, 1)]
    assert len(history.val_error[0]) == 4 and all(0.0 <= v <= 1.0 for v in history.val_error[0])


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
