"""Tests of jaxnets/train/parallel.py: the four data-parallel modes give the single-device numerics.

The equivalence runs in a subprocess with 8 simulated CPU devices (`_parallel_worker.py`), so the rest of
the suite keeps one device. Tolerance 1e-5 (rtol and atol): the modes compute the same float32 step
but sum the batch (loss, gradients, BatchNorm moments) in a different order (per-device partial sums,
then a cross-device sum), which moves results by a few ulps per step; after 5 SGD-momentum steps the
observed differences are ~1e-6.
"""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import _tiny
from _tolerances import FLOAT32
from jaxnets.train.parallel import CPU_COMPILER_OPTIONS, MODES, compile_steps, default_compiler_options
from jaxnets.train.state import TrainState

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOL = FLOAT32


def worker_env(xla_flags: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    # Optimisation level 0 halves the XLA:CPU compile time; every mode (and the 1-device reference) is
    # compiled with the same flags, and the numerics checked are those of the step, not of LLVM's passes.
    env["XLA_FLAGS"] = f"{xla_flags} --xla_backend_optimization_level=0".strip()
    return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel") / "results.npz"
    proc = subprocess.run([sys.executable, str(HERE / "_parallel_worker.py"), str(out)], cwd=HERE,
                          env=worker_env("--xla_force_host_platform_device_count=8"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    with np.load(out) as f:
        return dict(f)


def _entries(results, mode, case):
    prefix = f"{mode}/{case}/"
    return {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix) and "put_batch" not in k}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["full", "ragged"])
@pytest.mark.parametrize("mode", ["sharded", "shard_map", "pmap"])
def test_mode_matches_one_device(results, mode, case):
    """Params, BN statistics and metrics after 5 steps of a BN ResNet equal the 1-device run's."""
    ref, got = _entries(results, "none", case), _entries(results, mode, case)
    assert set(got) == set(ref) and any(k.startswith("batch_stats/") for k in ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], **TOL, err_msg=f"{mode}/{case}: {k}")
    for k in ("metrics/count", "metrics/correct", "eval/count", "eval/correct"):
        np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{mode}/{case}: {k}")
    expected = [16] * 5 if case == "full" else [13, 11, 13, 9, 13]
    np.testing.assert_array_equal(got["metrics/count"], expected)


@pytest.mark.slow
def test_training_moved_the_state(results):
    """The compared runs actually trained: 5 steps moved params and BN statistics far beyond the tolerance."""
    init = {k[len("init/"):]: v for k, v in results.items() if k.startswith("init/")}
    ref = _entries(results, "none", "full")
    assert set(init) == {k for k in ref if "/" in k and not k.startswith(("metrics/", "eval/"))}
    assert max(np.max(np.abs(ref[k] - init[k])) for k in init if k.startswith("params/")) > 1e-2
    assert max(np.max(np.abs(ref[k] - init[k])) for k in init if k.startswith("batch_stats/")) > 1e-2


@pytest.mark.slow
def test_padding_without_mask_would_differ(results):
    """Negative control: the same ragged batches zero-padded but unmasked give other BN statistics and params,
    so the ragged comparison above is sensitive to the padded rows."""
    ref, padded = _entries(results, "none", "ragged"), _entries(results, "none", "zero_padded")
    for group in ("params/", "batch_stats/"):
        assert max(np.max(np.abs(padded[k] - ref[k])) for k in ref if k.startswith(group)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sharded", "shard_map", "pmap"])
def test_put_batch_pads_to_the_devices(results, mode):
    """13 rows on 8 devices: padded to 16 (2 per device), mask True for the first 13."""
    mask = results[f"{mode}/ragged/put_batch/mask"]
    np.testing.assert_array_equal(mask, np.arange(16) < 13)
    shape = (8, 2) + _tiny.SHAPE if mode == "pmap" else (16,) + _tiny.SHAPE
    assert tuple(results[f"{mode}/ragged/put_batch/shape"]) == shape


# ---- one device (this process) ----

def _small_state(axis_name=None, **options):
    return TrainState.create(_tiny.SmallNet(axis_name=axis_name, **options), optax.sgd(0.1, momentum=0.9),
                             np.zeros((1, 4, 4, 1), np.uint8), 0)


def _small_batch(n=6, seed=0):
    return _tiny.data(1, n, seed=seed, shape=(4, 4, 1))[0]


def test_auto_on_one_device():
    steps = compile_steps()
    assert (steps.mode, steps.num_devices, steps.mesh, steps.axis_name) == ("none", 1, None, None)
    assert "none" in repr(steps) and MODES == ("none", "sharded", "shard_map", "pmap")


def test_none_mode_equals_jit_of_the_step():
    from jaxnets.train.steps import make_train_step

    steps = compile_steps("none")
    state, batch = _small_state(), _small_batch()
    want, want_metrics = jax.jit(make_train_step())(state, batch)
    got, got_metrics = steps.train(steps.put_state(state), steps.put_batch(batch))
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
        np.testing.assert_array_equal(a, b)
    assert int(got_metrics["count"]) == 6 and float(got_metrics["loss"]) == float(want_metrics["loss"])


def test_one_evaluation_program_serves_every_optimizer():
    """The evaluation step ignores the optimizer: states of SGD, Adam and float16 training share one compiled
    program (an optimizer sweep compiles it once), with the metrics of the plain jitted step."""
    from jaxnets.train.steps import make_eval_step

    steps, batch = compile_steps("none"), _small_batch()
    model = _tiny.SmallNet()
    states = [TrainState.create(model, tx, np.zeros((1, 4, 4, 1), np.uint8), 0)
              for tx in (optax.sgd(0.1), optax.adam(1e-3), optax.adamw(1e-3, weight_decay=0.1))]
    for state in states:
        got = steps.eval(steps.put_state(state), steps.put_batch(batch))
        want = jax.jit(make_eval_step())(state, batch)
        assert float(got["loss"]) == float(want["loss"]) and int(got["count"]) == 6
    assert steps.num_compiled()["eval"] == 1


@pytest.mark.parametrize("donate", [True, False])
def test_donation_and_put_state_copies(donate):
    """train donates the placed state (its buffers are reused); put_state copied, so the original lives on."""
    steps = compile_steps("none", donate=donate)
    original = _small_state()
    placed = steps.put_state(original)
    new, _ = steps.train(placed, steps.put_batch(_small_batch()))
    assert all(leaf.is_deleted() == donate for leaf in jax.tree.leaves(placed.params))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(original.params))
    assert int(new.step) == 1 and int(original.step) == 0


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_per_device_modes_need_a_model_with_the_axis(mode):
    """Under shard_map/pmap, a BatchNorm without axis_name="batch" would use per-device statistics: refused."""
    steps = compile_steps(mode)
    assert steps.axis_name == "batch" and steps.num_devices == 1
    state, batch = steps.put_state(_small_state(axis_name=None)), steps.put_batch(_small_batch())
    with pytest.raises(ValueError, match=r"train_step: BatchNorm .* has axis_name=None but the step runs with "
                                         r"axis_name='batch'"):
        steps.train(state, batch)


def test_sharded_mode_refuses_a_model_with_an_axis():
    steps = compile_steps("sharded")
    state = steps.put_state(_small_state(axis_name="batch"))
    with pytest.raises(ValueError, match=r"has axis_name='batch' but the step runs with axis_name=None"):
        steps.train(state, steps.put_batch(_small_batch()))


def test_compile_steps_errors():
    with pytest.raises(ValueError, match=r"compile_steps: mode must be one of .* got 'ddp'"):
        compile_steps("ddp")
    with pytest.raises(ValueError, match=r"compile_steps: devices must be a non-empty sequence"):
        compile_steps("sharded", devices=[])
    d = jax.devices()[0]
    with pytest.raises(ValueError, match=r"compile_steps: mode 'none' runs on one device of one process, got 2"):
        compile_steps("none", devices=[d, d])


def _ynn_fusions(steps, state, batch) -> int:
    """Number of YNNPACK library-fusion references in the compiled training program's HLO."""
    return steps.lower_train(steps.put_state(state), steps.put_batch(batch)).compile().as_text().count("__ynn")


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_compiler_options_send_convolutions_to_xla_on_cpu():
    """By default on CPU, the step's convolutions leave YNNPACK (fewer library fusions than with XLA's
    defaults; YNNPACK takes convolutions of 16 or more channels here, hence width 16); the numbers agree with
    XLA's defaults to float32 rounding (another conv algorithm): 1e-5."""
    state = TrainState.create(_tiny.TinyResNet(width=16), _tiny.optimizer(), np.zeros((1,) + _tiny.SHAPE, np.uint8), 0)
    batch = _tiny.data(1, 16, seed=3)[0]
    tuned, plain = compile_steps("none"), compile_steps("none", compiler_options=None)
    assert tuned.compiler_options == CPU_COMPILER_OPTIONS and plain.compiler_options is None
    assert _ynn_fusions(tuned, state, batch) < _ynn_fusions(plain, state, batch)
    a, ma = tuned.train(tuned.put_state(state), tuned.put_batch(batch))
    b, mb = plain.train(plain.put_state(state), plain.put_batch(batch))
    np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    # A dict is passed through (here: a no-op option value), "pmap" gets XLA's defaults.
    custom = compile_steps("none", compiler_options={"xla_cpu_enable_fast_math": False})
    assert custom.compiler_options == {"xla_cpu_enable_fast_math": False}
    assert compile_steps("pmap").compiler_options is None


@pytest.mark.slow
def test_cpu_compiler_options_equal_the_xla_flag():
    """The per-program options compile the program `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
    -individual_convolution` gives (XLA's default fusion list minus convolutions): identical HLO. Guards
    the hard-coded list against a jaxlib whose defaults change."""
    def hlo(options, xla_flags):
        env = dict(worker_env(""), XLA_FLAGS=xla_flags)
        proc = subprocess.run([sys.executable, str(HERE / "_hlo_worker.py"), options], cwd=HERE, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    tuned = hlo("auto", "")
    assert tuned == hlo("none", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
    assert tuned != hlo("none", "")  # negative control: XLA's defaults compile another program


def test_default_compiler_options(monkeypatch):
    """CPU only, and never over the user's own XLA_FLAGS setting of the same option."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert default_compiler_options() == CPU_COMPILER_OPTIONS
    assert default_compiler_options() is not CPU_COMPILER_OPTIONS  # a copy: the constant stays intact
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_dot")
    assert default_compiler_options() is None

    class Gpu:
        platform = "gpu"
    monkeypatch.delenv("XLA_FLAGS")
    assert default_compiler_options([Gpu()]) is None and default_compiler_options([jax.devices()[0], Gpu()]) is None


def test_compiler_options_errors():
    with pytest.raises(TypeError, match=r"compile_steps: compiler_options must be 'auto', None or a dict of XLA "
                                        r"options, got list"):
        compile_steps("none", compiler_options=["xla_cpu_enable_fast_math"])
    with pytest.raises(ValueError, match=r"compile_steps: mode 'pmap' cannot take compiler_options"):
        compile_steps("pmap", compiler_options=CPU_COMPILER_OPTIONS)


def test_put_batch():
    steps = compile_steps("none")
    batch = _small_batch()
    batch["mask"] = np.arange(6) < 4
    placed = steps.put_batch(batch)
    assert set(placed) == {"image", "label", "mask"} and placed["image"].shape == (6, 4, 4, 1)
    np.testing.assert_array_equal(placed["mask"], batch["mask"])
    assert placed["image"].devices() == {jax.devices()[0]}


def test_put_batch_with_global_batch_size_fixes_shapes_and_mask():
    """With global_batch_size every batch has the nominal rows and a mask (a short last batch recompiles nothing)."""
    steps = compile_steps("none")
    short = steps.put_batch(_small_batch(4), global_batch_size=6)
    full = steps.put_batch(_small_batch(6), global_batch_size=6)
    np.testing.assert_array_equal(short["mask"], np.arange(6) < 4)
    np.testing.assert_array_equal(full["mask"], np.ones(6, bool))
    assert short["image"].shape == full["image"].shape == (6, 4, 4, 1)
    np.testing.assert_array_equal(short["image"][4:], 0)
    np.testing.assert_array_equal(short["label"][:4], _small_batch(4)["label"])


def test_put_batch_errors():
    steps = compile_steps("none")
    with pytest.raises(TypeError, match=r"put_batch: batch must be a dict of arrays, got list"):
        steps.put_batch([np.zeros(3)])
    with pytest.raises(ValueError, match=r"put_batch: every array of the batch must have the same first dimension"):
        steps.put_batch({"image": np.zeros((4, 2)), "label": np.zeros(3, np.int32)})
    with pytest.raises(ValueError, match=r"put_batch: this process holds 6 rows, more than its share"):
        steps.put_batch(_small_batch(), global_batch_size=4)
