"""The dependency smoke test: what `.ci/run` runs in the minimum-versions and newest-versions environments.

    python .ci/deps_smoke.py            # from the repository root, with jaxnets installed (or PYTHONPATH=.)

It imports every jaxnets subpackage, prints the versions it found, then on 1,000 MNIST-sample digits:
trains LeNet-5 (convolutions, BatchNorm-free) and an MLP with BatchNorm and dropout for one epoch with
a checkpoint, resumes each to two epochs and checks that the result is bitwise the uninterrupted
two-epoch run (params and optimizer state), evaluates, and restores a checkpoint by hand; then runs one
step of every data-parallel mode ("sharded", "shard_map", "pmap") on 2 simulated CPU devices, and
trains two LeNet-5 seeds as one vmapped population (equal to the single runs). With
tensorboardX installed it also checks that `fit(log_dir=...)` writes event files. Any failure raises:
the exit status is non-zero (Python's, for an uncaught exception). It is not a pytest module (pytest
collects tests/ only), so it runs under any pytest or none.

`--xla-defaults` compiles with `compiler_options=None` (XLA's defaults) instead of "auto": the default's
CPU option exists from jaxlib 0.8.1 on, so this shows what an older jaxlib would do without it.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import tempfile
import time

# Two simulated CPU devices, set before jax is imported: the data-parallel modes run too (the fits use "none").
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()

import numpy as np  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "numpy", "grain", "tensorboardX")


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}: not installed")
    return ", ".join(found)


def _same(a, b, what: str) -> None:
    import jax
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(leaves_a) != len(leaves_b):
        raise AssertionError(f"deps_smoke: {what}: {len(leaves_a)} leaves against {len(leaves_b)}.")
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            raise AssertionError(f"deps_smoke: {what} differs between the resumed and the uninterrupted run.")


def _run(model_name: str, model_kwargs: dict, train_set, test_set, root: str, options) -> None:
    from jaxnets import models, train

    tx = train.optimizer("adam", learning_rate=1e-3)
    common = dict(batch_size=100, optimizer=tx, seed=0, progress=False, compiler_options=options, parallel="none")
    full, history_full = train.fit(models.create(model_name, **model_kwargs), train_set, epochs=2,
                                   val_data=test_set, **common)
    directory = os.path.join(root, model_name)
    _, first = train.fit(models.create(model_name, **model_kwargs), train_set, epochs=1, val_data=test_set,
                         checkpoint_dir=directory, **common)
    if len(first.train_loss) != 1 or not np.isfinite(first.train_loss[0]):
        raise AssertionError(f"deps_smoke: {model_name}: one epoch gave history {first.to_dict()}.")
    resumed, history = train.fit(models.create(model_name, **model_kwargs), train_set, epochs=2, val_data=test_set,
                                 checkpoint_dir=directory, resume=True, **common)
    _same(resumed.params, full.params, f"{model_name} params")
    _same(resumed.opt_state, full.opt_state, f"{model_name} opt_state")
    _same(resumed.batch_stats, full.batch_stats, f"{model_name} batch_stats")
    if history.train_loss != history_full.train_loss:
        raise AssertionError(f"deps_smoke: {model_name}: resumed losses {history.train_loss} != "
                             f"{history_full.train_loss}.")
    scores = train.evaluate(resumed, test_set, batch_size=256, compiler_options=options)
    if abs(scores["loss"] - history.val_loss[-1]) > 1e-5 or scores["count"] != len(test_set["label"]):
        raise AssertionError(f"deps_smoke: {model_name}: evaluate {scores} against val_loss {history.val_loss[-1]}.")
    with train.Checkpoints(directory) as checkpoints:
        restored, meta = checkpoints.restore(resumed, checkpoints.latest())
    _same(restored.params, resumed.params, f"{model_name} restored params")
    if not history.train_loss[1] < history.train_loss[0] or scores["accuracy"] < 0.15:  # chance is 0.1
        raise AssertionError(f"deps_smoke: {model_name}: losses {history.train_loss}, accuracy "
                             f"{scores['accuracy']} after two epochs: not learning.")
    print(f"deps_smoke: {model_name}: resume bitwise, evaluate {scores['accuracy']:.3f} on {scores['count']}, "
          f"checkpoint epoch {meta['epoch']} restored")


def _parallel(train_set, options) -> None:
    """One training step of every data-parallel mode on the 2 devices: the same loss and norms as one device."""
    import jax
    from jaxnets import models, train

    batch = {k: v[:64] for k, v in train_set.items()}
    results = {}
    for mode in train.MODES:
        steps = train.compile_steps(mode, devices=jax.devices()[:1] if mode == "none" else jax.devices(),
                                    compiler_options=None if mode == "pmap" else options)
        model = models.create("mlp", batch_norm_layers=1, axis_name=steps.axis_name)
        state = train.TrainState.create(model, train.optimizer("sgd", learning_rate=0.1), batch["image"][:1], 0)
        _, metrics = steps.train(steps.put_state(state), steps.put_batch(batch))
        results[mode] = np.array([float(metrics[k]) for k in ("loss", "count", "grad_norm")])
    for mode, got in results.items():
        if not np.allclose(got, results["none"], rtol=1e-5):
            raise AssertionError(f"deps_smoke: mode {mode!r} gave (loss, count, grad_norm) {got}, one device "
                                 f"{results['none']}.")
    print(f"deps_smoke: {', '.join(results)} agree on {jax.device_count()} devices")


def _population(train_set, options) -> None:
    """Two LeNet-5 seeds as one vmapped population (jaxnets' own batching rules for convolutions): each member
    equal to its single run, to float32 rounding."""
    import jax
    from jaxnets import models, train
    common = dict(epochs=1, batch_size=100, optimizer=train.optimizer("sgd", learning_rate=0.05, momentum=0.9),
                  progress=False, compiler_options=options, parallel="none")
    small = {k: v[:300] for k, v in train_set.items()}
    population, _ = train.fit(models.create("lenet5"), small, seeds=[0, 1], population="vmap", **common)
    for r, seed in enumerate((0, 1)):
        single, _ = train.fit(models.create("lenet5"), small, seed=seed, **common)
        member = train.unstack(population, r)
        for a, b in zip(jax.tree.leaves(member.params), jax.tree.leaves(single.params)):
            if not np.allclose(np.asarray(a), np.asarray(b), atol=1e-5):
                raise AssertionError(f"deps_smoke: population member {r} differs from fit(seed={seed}) by "
                                     f"{np.abs(np.asarray(a) - np.asarray(b)).max():.2e}.")
    print("deps_smoke: a vmapped population of 2 LeNet-5 seeds equals the single runs")


def _tensorboard(train_set, root: str, options) -> None:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        print("deps_smoke: tensorboardX not installed: TensorBoard check skipped")
        return
    from jaxnets import models, train
    log_dir = os.path.join(root, "tb")
    train.fit(models.create("mlp"), train_set, epochs=1, batch_size=100, seed=0, progress=False,
              optimizer=train.optimizer("sgd", learning_rate=0.1), log_dir=log_dir, compiler_options=options,
              parallel="none")
    events = [name for name in os.listdir(log_dir) if name.startswith("events.out.tfevents")]
    if not events:
        raise AssertionError(f"deps_smoke: fit(log_dir=...) wrote no event file in {os.listdir(log_dir)}.")
    print(f"deps_smoke: TensorBoard event file written ({events[0]})")


def main(argv: list[str]) -> int:
    unknown = [a for a in argv if a != "--xla-defaults"]
    if unknown:
        raise SystemExit(f"deps_smoke: unknown arguments {unknown}; the only option is --xla-defaults.")
    options = None if "--xla-defaults" in argv else "auto"
    started = time.perf_counter()
    print(f"deps_smoke: Python {sys.version.split()[0]}; {_versions()}")
    import jaxnets
    for sub in ("checks", "layers", "init", "nn", "models", "train", "data", "train.cli"):
        importlib.import_module(f"jaxnets.{sub}")
    from jaxnets import data
    sample = data.shuffle(data.mnist_sample(), seed=0)
    train_set = {k: np.asarray(v[:1000]) for k, v in sample.items()}
    test_set = {k: np.asarray(v[4500:]) for k, v in sample.items()}
    with tempfile.TemporaryDirectory() as root:
        _run("lenet5", {}, train_set, test_set, root, options)
        _run("mlp", {"batch_norm_layers": 1, "dropout": 0.1}, train_set, test_set, root, options)
        _parallel(train_set, options)
        _population(train_set, options)
        _tensorboard(train_set, root, options)
    print(f"deps_smoke: OK, jaxnets {getattr(jaxnets, '__version__', '?')}, {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
