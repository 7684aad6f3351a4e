"""`load_run`: a real tiny run of the command line, loaded back; its predictions equal the trained state's;
older, foreign and damaged run directories give errors that name the file."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxnets import data
from jaxnets.data.augment import to_float
from jaxnets.train import (CheckpointError, Run, TrainState, cli, default_compiler_options, evaluate, fit, load_run,
                           sgd)

# 300 digits of the packaged sample (270 train / 30 validation), batch 30, one epoch: 9 steps.
FLAGS = ["--subset", "300", "--batch-size", "30", "--epochs", "1", "--no-progress", "--optimizer", "sgd"]


def _train_by_cli(out, flags) -> tuple:
    """(out, the state `fit` returned to the command line) of one in-process run of `jaxnets-train`."""
    states = []
    real_fit = cli.fit

    def capturing_fit(*args, **kwargs):
        state, history = real_fit(*args, **kwargs)
        states.append(state)
        return state, history

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "fit", capturing_fit)
        assert cli.main(["--out", str(out), *flags]) == 0
    return out, states[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, the state `fit` returned to the command line) of one in-process CLI run."""
    return _train_by_cli(tmp_path_factory.mktemp("runs") / "run", FLAGS)


def _validation():
    """The run's held-out split, as the command line makes it (subset 300, validation fraction 0.1, seed 0)."""
    full = data.mnist_sample()
    _, subset = data.split(full, 300 / len(full["label"]), seed=0)
    return data.split(subset, 0.1, seed=0)[1]


def _copy(trained, tmp_path):
    return shutil.copytree(trained[0], tmp_path / "run")


def test_load_run_rebuilds_model_state_config_history(trained):
    out, state = trained
    run = load_run(out)
    assert isinstance(run, Run) and run.epoch == 1 and run.run_dir == str(out)
    assert run.image_shape == (28, 28, 1) and run.num_classes == 10
    assert run.config["model"] == "lenet5" and run.config["format"] == cli.CONFIG_FORMAT
    assert len(run.history) == 1 and run.history.train_loss == pytest.approx(
        json.loads((out / "history.json").read_text())["train_loss"])
    # The whole state comes back bit for bit, optimizer state included, with the run's optimizer.
    assert int(run.state.step) == int(state.step) == 9
    for got, want in zip(jax.tree.leaves((run.state.params, run.state.batch_stats, run.state.opt_state)),
                         jax.tree.leaves((state.params, state.batch_stats, state.opt_state))):
        np.testing.assert_array_equal(got, want)
    assert load_run(out, epoch="best").epoch == 1 and load_run(out, epoch=1).epoch == 1


def test_predict_equals_the_trained_states_logits(trained):
    out, state = trained
    run = load_run(out)
    images = _validation()["image"]  # 30 images: batches of 8 leave a padded last batch of 6
    want = jax.jit(lambda v, x: state.apply_fn(v, to_float(x), train=False))(state.variables, images)
    for batch_size in (8, 30, 256):
        got = run.predict(images, batch_size=batch_size)
        assert got.shape == (30, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32; other compiler options, batch sizes
    # Batches of 8 rows (the last 6 padded to 8: no new program) and of 30 rows (batch_size 30 and 256): 2 programs.
    assert run.forward._cache_size() == 2
    assert run.forward.compiler_options == default_compiler_options()
    assert run.predict(images[:0]).shape == (0, 10)


def test_run_evaluate_agrees_with_train_evaluate(trained):
    run = load_run(trained[0])
    val = _validation()
    result, reference = run.evaluate(val, batch_size=7), evaluate(run.state, val)
    assert result["count"] == reference["count"] == 30 and result["correct"] == reference["correct"]
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    logits = run.predict(val["image"])
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert result["top5"] == pytest.approx(np.mean([label in row for label, row in zip(val["label"], top5)]))
    assert result["accuracy"] <= result["top5"] <= 1.0


def test_predict_and_evaluate_errors(trained):
    run = load_run(trained[0])
    with pytest.raises(ValueError, match=r"Run.predict: images must have shape \[N, 28, 28, 1\] .* got \(2, 1, 28, 28\)"):
        run.predict(np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(TypeError, match=r"Run.predict: images must be uint8 .* got dtype int32"):
        run.predict(np.zeros((2, 28, 28, 1), np.int32))
    with pytest.raises(ValueError, match=r"Run.predict: batch_size must be .*>= 1.*got 0"):
        run.predict(np.zeros((2, 28, 28, 1), np.uint8), batch_size=0)
    with pytest.raises(TypeError, match=r"Run.predict: batch_size must be an int"):
        run.predict(np.zeros((2, 28, 28, 1), np.uint8), batch_size=True)
    with pytest.raises(TypeError, match=r"Run.evaluate: data must be a dict"):
        run.evaluate(np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(ValueError, match=r"Run.evaluate: data\['label'\] must be classes in \[0, 10\), got values in \[0, 10\]"):
        run.evaluate({"image": np.zeros((2, 28, 28, 1), np.uint8), "label": np.array([0, 10])})
    with pytest.raises(ValueError, match=r"Run.evaluate: data\['label'\] must be \[N\] integer classes"):
        run.evaluate({"image": np.zeros((2, 28, 28, 1), np.uint8), "label": np.zeros((2, 1), np.int32)})


@pytest.mark.parametrize("epoch, error, message", [
    ("last", ValueError, r"load_run: epoch must be 'latest', 'best' or an epoch number, got 'last'"),
    (True, TypeError, r"load_run: epoch must be 'latest', 'best' or an int epoch number, got bool True"),
    (1.0, TypeError, r"load_run: epoch must be 'latest', 'best' or an int epoch number, got float 1.0"),
    (0, ValueError, r"load_run: epoch must be an epoch number >= 1, got 0"),
    (7, FileNotFoundError, r"load_run: no checkpoint of epoch 7 in .*checkpoints'; saved epochs: \[1\]"),
])
def test_bad_epoch(trained, epoch, error, message):
    with pytest.raises(error, match=message):
        load_run(trained[0], epoch=epoch)


def test_bad_run_dir(trained, tmp_path):
    with pytest.raises(TypeError, match=r"load_run: run_dir must be a str or os.PathLike .* got int"):
        load_run(3)
    with pytest.raises(FileNotFoundError, match=r"load_run: the run directory .*nowhere' does not exist"):
        load_run(tmp_path / "nowhere")
    # The checkpoints/ directory instead of the run directory: the message points to the parent.
    with pytest.raises(FileNotFoundError, match=r"config.json' is missing; .*looks like the checkpoints/ of the run"):
        load_run(trained[0] / "checkpoints")


def test_run_of_fit_without_config_json_says_how_to_restore_it(tmp_path):
    from jaxnets import models

    train = data.split(data.mnist_sample(), 0.02, seed=0)[1]  # 100 digits
    model = models.create("mlp", variant="mnist", num_classes=10)
    fit(model, train, epochs=1, batch_size=50, optimizer=sgd(0.1), checkpoint_dir=tmp_path / "ckpt", progress=False)
    with pytest.raises(FileNotFoundError, match=r"load_run: .*ckpt/config.json' is missing; .*a run written by "
                                                r"fit\(checkpoint_dir=...\) from Python has none: restore it with "
                                                r"Checkpoints\(checkpoint_dir\).restore\(TrainState.create"):
        load_run(tmp_path / "ckpt")


@pytest.mark.parametrize("edit, message", [
    (lambda c: "{", r"load_run: cannot read '.*config.json': Expecting property name"),
    (lambda c: "[1, 2]", r"load_run: '.*config.json' holds a list, not the run's flags"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k not in ("format", "image_shape", "num_classes",
                                                                   "jaxnets_version")}),
     r"load_run: '.*config.json' was written by an older jaxnets \(it has no 'format'\): it does not record the "
     r"image_shape and num_classes"),
    (lambda c: json.dumps({**c, "format": 99, "jaxnets_version": "9.0"}),
     r"load_run: '.*config.json' has format 99; this jaxnets reads formats up to 2 \(written by jaxnets 9.0\)"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "num_classes"}),
     r"load_run: '.*config.json' lacks 'num_classes', which load_run needs"),
    (lambda c: json.dumps({**c, "model": "resnet18"}),
     r"load_run: the model that '.*config.json' describes \(resnet18\) does not fit its checkpoint: "
     r"Checkpoints.restore: the checkpoint '.*checkpoints/1' does not fit the given state"),
])
def test_old_foreign_or_broken_config_json_names_the_file(trained, tmp_path, edit, message):
    out = _copy(trained, tmp_path)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(edit(config))
    with pytest.raises(ValueError, match=message):
        load_run(out)


def test_damaged_checkpoint_raises_checkpoint_error(trained, tmp_path):
    out = _copy(trained, tmp_path)
    files = [os.path.join(root, name) for root, _, names in os.walk(out / "checkpoints" / "1" / "state")
             for name in names]
    path = max(files, key=os.path.getsize)
    raw = bytearray(open(path, "rb").read())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    open(path, "wb").write(bytes(raw))
    with pytest.raises(CheckpointError, match=r"the checkpoint of epoch 1, '.*checkpoints/1', (is corrupted|has "
                                              r"unreadable arrays)") as info:
        load_run(out)
    assert info.value.path == str(out / "checkpoints" / "1")
    shutil.rmtree(out / "checkpoints")
    with pytest.raises(FileNotFoundError, match=r"load_run: '.*checkpoints' is missing; the run saved no checkpoint"):
        load_run(out)
    (out / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"load_run: '.*checkpoints' holds no checkpoint"):
        load_run(out)


def test_state_is_a_train_state_that_trains_on(trained):
    """The rebuilt optimizer is the run's: one more step from the loaded state equals one more step from
    the state fit returned (the optimizer state and the cosine schedule's position included)."""
    from jaxnets.train import make_train_step

    out, state = trained
    run = load_run(out)
    assert isinstance(run.state, TrainState)
    batch = {k: v[:30] for k, v in _validation().items()}
    step = jax.jit(make_train_step())
    got, want = step(run.state, batch)[0], step(state, batch)[0]
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_bfloat16_run_loads_and_predicts_in_its_precision(tmp_path):
    """A --precision bfloat16 run: load_run rebuilds it in bfloat16 (parameters float32), and predict's numbers
    are the bfloat16 evaluation step's."""
    out = tmp_path / "run"
    assert cli.main(["--out", str(out), "--precision", "bfloat16", *FLAGS]) == 0
    run = load_run(out)
    assert run.config["precision"] == "bfloat16"
    assert {leaf.dtype for leaf in jax.tree.leaves(run.state.params)} == {np.dtype(np.float32)}
    val = _validation()
    result, reference = run.evaluate(val), evaluate(run.state, val, precision="bfloat16")
    assert result["correct"] == reference["correct"] and result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    float32 = evaluate(run.state, val)
    assert result["loss"] != float32["loss"]  # the precision matters, and predict used the run's


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(run directory, the stacked state `fit` returned) of a CLI sweep: 2 learning rates x 2 seeds, 2 epochs."""
    flags = [f for f in FLAGS if f not in ("--epochs", "1")] + ["--epochs", "2", "--seeds", "0,3",
                                                                 "--lr", "0.01,0.1", "--momentum", "0.9"]
    return _train_by_cli(tmp_path_factory.mktemp("runs") / "sweep", flags)


def test_load_run_of_a_sweep_member_is_that_member(swept):
    from jaxnets.train import unstack
    out, stacked = swept
    for r, (seed, lr) in enumerate([(0, 0.01), (3, 0.01), (0, 0.1), (3, 0.1)]):
        run = load_run(out, member=r)
        assert run.member == {"index": r, "seed": seed, "learning_rate": lr} and run.epoch == 2
        want = unstack(stacked, r)
        assert int(run.state.step) == int(want.step) == 18
        for got, expected in zip(jax.tree.leaves((run.state.params, run.state.opt_state)),
                                 jax.tree.leaves((want.params, want.opt_state))):
            np.testing.assert_array_equal(got, expected)
        # The member's own history; its validation loss is what its restored state evaluates to.
        assert len(run.history) == 2 and run.history.runs is None
        assert run.evaluate(_validation())["loss"] == pytest.approx(run.history.val_loss[-1], rel=1e-5)
        # The optimizer rebuilt from config.json is the member's: the same update as the one fit trained with.
        grads = jax.tree.map(lambda p: jax.numpy.full_like(p, 0.5), run.state.params)
        got = run.state.tx.update(grads, run.state.opt_state, run.state.params)[0]
        expected = want.tx.update(grads, want.opt_state, want.params)[0]
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(a, b)
    assert "member=" in repr(load_run(out, member=1, epoch=1)) and load_run(out, member=1, epoch=1).epoch == 1
    assert load_run(out, member=2, epoch="best").epoch in (1, 2)


def test_load_run_of_a_sweep_needs_a_member(swept, trained):
    out, _ = swept
    with pytest.raises(ValueError, match=r"load_run: .* holds a sweep of 4 members; pass member=r .*none was given.*"
                                         r"0: \{'seed': 0, 'learning_rate': 0.01\}"):
        load_run(out)
    with pytest.raises(ValueError, match="got member=4"):
        load_run(out, member=4)
    with pytest.raises(TypeError, match="load_run: member"):
        load_run(out, member=True)
    with pytest.raises(ValueError, match="load_run: member=0 is for a sweep's run directory"):
        load_run(trained[0], member=0)


def test_cli_evaluate_of_a_sweep_member(swept, capsys):
    out, _ = swept
    assert cli.main(["evaluate", str(out), "--member", "2"]) == 0
    printed = capsys.readouterr().out
    loss = load_run(out, member=2).evaluate(_validation())["loss"]
    assert f"loss {loss:.4f}" in printed and "30 images" in printed
    assert cli.main(["evaluate", str(out)]) != 0
    assert "pass member=r" in capsys.readouterr().err
