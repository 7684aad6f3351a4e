"""Tests of jaxnets/train/precision.py and its use in the steps, compile_steps, checkpoints and fit.

Tolerances: bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%) and float16 11 (0.05%).
Over 20 SGD steps of a small BN ResNet on a learnable task (mean loss 1.6 -> ~0.3), measured on 4 data
seeds, the per-step mean loss differs from float32's by 0.004-0.014 on average and 0.017-0.061 at most
(bfloat16), 0.001-0.007 and 0.004-0.028 (float16): the trajectories drift apart slowly as rounding
differences compound. Bounds: mean 0.04 / 0.02, max 0.15 / 0.08 (about 3x the worst seed). The four
data-parallel modes in float16 differ from one device by up to 2.4e-3 relative after 5 steps (float16
sums in another order); the bound is 1e-2.
"""
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import _tiny
from _state_compare import assert_bitwise_equal
from jaxnets.layers.population import conv_data_gradient_p, conv_forward_p, conv_weight_gradient_p
from jaxnets.train import DynamicLossScale, Policy, TrainState, make_eval_step, make_train_step
from jaxnets.train.fit import fit
from jaxnets.train.precision import all_finite
from test_parallel import HERE, worker_env

MODEL = _tiny.TinyResNet()
STEPS = {p: jax.jit(make_train_step(precision=p)) for p in (None, "bfloat16", "float16")}


def _state(precision=None, **options):
    return TrainState.create(MODEL, _tiny.optimizer(), np.zeros((1,) + _tiny.SHAPE, np.uint8), 0,
                             precision=precision, **options)


def _learnable(num_steps: int, n: int, seed: int = 0) -> list[dict]:
    """uint8 images whose colour and brightness encode the class: the tiny ResNet learns it in ~20 steps."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_steps):
        label = rng.integers(0, _tiny.NUM_CLASSES, n).astype(np.int32)
        signal = np.zeros((n,) + _tiny.SHAPE)
        for c in range(_tiny.NUM_CLASSES):
            signal[label == c, :, :, c % 3] = 80 * (1 + c // 3)
        image = np.clip(rng.normal(100, 30, (n,) + _tiny.SHAPE) + signal, 0, 255).astype(np.uint8)
        out.append({"image": image, "label": label})
    return out


def _run(precision, batches, state=None):
    state = _state(precision) if state is None else state
    losses = []
    for batch in batches:
        state, metrics = STEPS[precision](state, batch)
        losses.append(float(metrics["loss"]) / len(batch["label"]))
    return state, np.array(losses)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ---- Policy ----

def test_policy_from_strings_and_back():
    assert Policy.from_string("bfloat16") == Policy("bfloat16") == Policy(jnp.bfloat16)
    assert Policy("bf16").compute_dtype == jnp.bfloat16 and Policy("fp16").compute_dtype == jnp.float16
    p = Policy.from_string("compute=float16, params=float32, output=bfloat16")
    assert (p.compute_dtype, p.param_dtype, p.output_dtype) == (jnp.float16, jnp.float32, jnp.bfloat16)
    assert Policy.from_string(str(p)) == p and str(Policy("bfloat16")) == "bfloat16"
    assert Policy.from_string("params=bfloat16").compute_dtype == jnp.float32
    assert Policy("float32").is_float32 and not Policy("bfloat16").is_float32
    assert Policy("float16").needs_loss_scale and not Policy("bfloat16").needs_loss_scale
    assert hash(Policy("bfloat16")) == hash(Policy.from_string("bf16"))  # a static, cacheable value


def test_policy_casts_only_floating_leaves():
    tree = {"w": jnp.ones(2), "n": jnp.arange(3), "h": jnp.ones(2, jnp.float16)}
    out = Policy("bfloat16").cast_to_compute(tree)
    assert out["w"].dtype == out["h"].dtype == jnp.bfloat16 and out["n"].dtype == tree["n"].dtype
    assert Policy("bfloat16").cast_to_output(out)["w"].dtype == jnp.float32


def test_policy_errors():
    with pytest.raises(ValueError, match=r"Policy: compute_dtype must be one of \('float32', 'bfloat16', "
                                         r"'float16'\), got float64"):
        Policy(np.float64)
    with pytest.raises(ValueError, match=r"Policy: param_dtype must be one of .* got 'int8'"):
        Policy("bfloat16", param_dtype="int8")
    with pytest.raises(TypeError, match=r"Policy: compute_dtype must be a dtype or one of the names .* got "
                                        r"object"):
        Policy(object())
    with pytest.raises(ValueError, match=r"Policy.from_string: expected 'key=dtype' entries with the keys "
                                         r"\('compute', 'params', 'output'\), got 'weights=float32'"):
        Policy.from_string("compute=bfloat16,weights=float32")
    with pytest.raises(ValueError, match=r"Policy.from_string: text must be one of .* got 'half-ish'"):
        Policy.from_string("half-ish")
    with pytest.raises(TypeError, match=r"Policy.from_string: text must be a string .* got int 16"):
        Policy.from_string(16)
    with pytest.raises(TypeError, match=r"make_train_step: precision must be None, a dtype name such as "
                                        r"'bfloat16' or a jaxnets.train.Policy, got int 16"):
        make_train_step(precision=16)
    with pytest.raises(ValueError, match=r"Policy.from_string: text must be one of .* got 'float64'"):
        make_eval_step(precision="float64")


# ---- DynamicLossScale ----

def test_loss_scale_defaults_are_torch_grad_scalers():
    scaler, ours = torch.amp.GradScaler("cpu"), DynamicLossScale.create()
    assert float(ours.scale) == scaler.get_scale() == 2.0 ** 16
    assert (ours.growth_factor, ours.backoff_factor, ours.growth_interval) == (
        scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval())
    assert ours.scale.dtype == jnp.float32 and ours.growth_tracker.dtype == jnp.int32


def test_scale_sequence_matches_torch_grad_scaler():
    """The same finite/non-finite pattern gives torch.amp.GradScaler's scale after every step, and a
    skipped step leaves the parameter as it was in both."""
    pattern = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1]  # 1: finite gradients
    options = dict(init_scale=2.0 ** 4, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **options)
    ours = DynamicLossScale.create(**options)
    adjust = jax.jit(lambda s, finite: s.adjust(finite))
    want, got = [], []
    for finite in pattern:
        before = p.detach().clone()
        opt.zero_grad()
        x = torch.tensor([1.0, 2.0 if finite else float("inf")])
        scaler.scale((p * x).sum()).backward()
        scaler.step(opt)
        scaler.update()
        assert torch.equal(p.detach(), before) != bool(finite)
        want.append(scaler.get_scale())
        grads = ours.unscale({"p": ours.scale_loss(jnp.float32(1.0)) * jnp.array([1.0, 2.0 if finite else np.inf])})
        ours = adjust(ours, all_finite(grads))
        got.append(float(ours.scale))
    assert got == want
    steps = np.diff([options["init_scale"]] + want)
    assert (steps > 0).any() and (steps < 0).any()  # the pattern makes the scale both grow and back off


def test_loss_scale_errors():
    with pytest.raises(ValueError, match=r"DynamicLossScale.create: init_scale must be a finite float > 0, got 0"):
        DynamicLossScale.create(0)
    with pytest.raises(ValueError, match=r"DynamicLossScale.create: growth_factor must be a finite float > 1, "
                                         r"got 0.5"):
        DynamicLossScale.create(growth_factor=0.5)
    with pytest.raises(ValueError, match=r"DynamicLossScale.create: backoff_factor must be a float in \(0, 1\), "
                                         r"got 2"):
        DynamicLossScale.create(backoff_factor=2)
    with pytest.raises(TypeError, match=r"DynamicLossScale.create: init_scale must be a finite float > 0, got str"):
        DynamicLossScale.create("1024")
    with pytest.raises(TypeError, match=r"DynamicLossScale.create: growth_interval must be an int >= 1, got "
                                        r"float 2.0"):
        DynamicLossScale.create(growth_interval=2.0)
    with pytest.raises(ValueError, match=r"DynamicLossScale.create: growth_interval must be an int >= 1, got 0"):
        DynamicLossScale.create(growth_interval=0)


# ---- the training step ----

@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_float32_default_is_bitwise_unchanged():
    """No precision, an explicit float32 policy: the same program (jaxpr) and the same bits after 3 steps."""
    batches = _tiny.data(3, 8, seed=1)
    float32 = jax.jit(make_train_step(precision="float32"))
    plain, explicit = _state(), _state("float32")
    assert plain.loss_scale is None and explicit.loss_scale is None
    assert str(jax.make_jaxpr(make_train_step())(plain, batches[0])) == str(
        jax.make_jaxpr(make_train_step(precision=Policy("float32")))(explicit, batches[0]))
    for batch in batches:
        plain, _ = STEPS[None](plain, batch)
        explicit, _ = float32(explicit, batch)
    assert_bitwise_equal(plain, explicit)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_forward_and_backward_run_in_the_compute_dtype(precision):
    """Every conv and matmul of the step (forward and backward) takes compute-dtype operands; the master
    parameters, their update, BN statistics and the loss stay float32."""
    state, batch = _state(precision), _tiny.data(1, 8)[0]
    jaxpr = jax.make_jaxpr(make_train_step(precision=precision))(state, batch)
    heavy = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name in CONVOLUTIONS + ("dot_general",)]
    assert len(heavy) >= 3 * 6  # 6 convs + 1 dense, each forward, data and weight gradient
    assert {v.aval.dtype.name for e in heavy for v in e.invars} == {precision}
    new, metrics = STEPS[precision](state, batch)
    for tree in (new.params, new.batch_stats, new.opt_state):
        assert {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)} == {
            jnp.dtype(jnp.float32)}
    assert metrics["loss"].dtype == jnp.float32 and not _leaves_equal(new.params, state.params)


# layers.conv's primitives (forward, data and weight gradient: lax's convolution with population batching rules,
# jaxnets/layers/population.py) and lax's own (the small-input path).
CONVOLUTIONS = ("conv_general_dilated", conv_forward_p.name, conv_data_gradient_p.name, conv_weight_gradient_p.name)


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


@pytest.mark.parametrize("precision,mean_tolerance,max_tolerance", [("bfloat16", 0.04, 0.15), ("float16", 0.02, 0.08)])
def test_low_precision_training_tracks_float32(precision, mean_tolerance, max_tolerance):
    batches = _learnable(20, 32)
    _, reference = _run(None, batches)
    state, losses = _run(precision, batches)
    assert reference[0] > 1.5 and reference[-5:].mean() < 0.5  # float32 really learns over these steps
    difference = np.abs(losses - reference)
    assert difference.mean() < mean_tolerance and difference.max() < max_tolerance, difference
    if precision == "float16":  # no overflow at torch's default scale: every step applied, no growth yet
        assert float(state.loss_scale.scale) == 2.0 ** 16 and int(state.loss_scale.growth_tracker) == 20


def test_bfloat16_without_loss_scale_and_eval_in_bfloat16():
    state = _state("bfloat16")
    assert state.loss_scale is None
    batch = _tiny.data(1, 8)[0]
    jaxpr = jax.make_jaxpr(make_eval_step(precision="bfloat16"))(state, batch)
    convs = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name in CONVOLUTIONS]
    assert convs and {v.aval.dtype.name for e in convs for v in e.invars} == {"bfloat16"}
    metrics = jax.jit(make_eval_step(precision="bfloat16"))(state, batch)
    reference = jax.jit(make_eval_step())(state, batch)
    assert metrics["loss"].dtype == jnp.float32
    np.testing.assert_allclose(metrics["loss"], reference["loss"], rtol=2e-2)


@pytest.mark.parametrize("inject", ["huge_scale", "inf_input"])
def test_float16_overflow_skips_the_update_and_backs_off(inject):
    """Non-finite gradients: params, opt_state and batch_stats bitwise unchanged, step + 1, scale halved."""
    batch = _tiny.data(1, 8)[0]
    if inject == "huge_scale":  # the logits' cotangent, 2^100 / 8, overflows float16 in the backward pass
        state = _state("float16", loss_scale=DynamicLossScale.create(2.0 ** 100))
    else:  # one inf pixel: its forward and the gradients become non-finite
        state = _state("float16", loss_scale=DynamicLossScale.create(2.0 ** 10))
        batch = {"image": batch["image"].astype(np.float32) / 255, "label": batch["label"]}
        batch["image"][0, 0, 0, 0] = np.inf
    before = state.replace(loss_scale=state.loss_scale.replace(growth_tracker=jnp.int32(5)))
    new, _ = STEPS["float16"](before, batch)
    for name in ("params", "opt_state", "batch_stats"):
        assert _leaves_equal(getattr(new, name), getattr(before, name)), name
    assert int(new.step) == int(before.step) + 1
    assert float(new.loss_scale.scale) == float(before.loss_scale.scale) / 2 and int(new.loss_scale.growth_tracker) == 0


def test_growth_after_growth_interval_finite_steps():
    state = _state("float16", loss_scale=DynamicLossScale.create(2.0 ** 10, growth_interval=3))
    scales, trackers = [], []
    for batch in _tiny.data(4, 8):
        params = state.params
        state, _ = STEPS["float16"](state, batch)
        assert not _leaves_equal(state.params, params)  # every step applied
        scales.append(float(state.loss_scale.scale))
        trackers.append(int(state.loss_scale.growth_tracker))
    assert scales == [2.0 ** 10, 2.0 ** 10, 2.0 ** 11, 2.0 ** 11] and trackers == [1, 2, 0, 1]


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_masked_batch_equals_its_valid_rows(precision):
    """A ragged batch zero-padded with mask=False rows trains like the valid rows alone."""
    batch = _tiny.data(1, 8, seed=2)[0]
    padded = {"image": np.concatenate([batch["image"][:5], np.zeros_like(batch["image"][:3])]),
              "label": np.concatenate([batch["label"][:5], np.zeros(3, np.int32)]), "mask": np.arange(8) < 5}
    valid = {k: v[:5] for k, v in batch.items()}
    state = _state(precision)
    got, got_metrics = STEPS[precision](state, padded)
    want, want_metrics = STEPS[precision](state, valid)
    assert int(got_metrics["count"]) == 5
    np.testing.assert_allclose(got_metrics["loss"], want_metrics["loss"], rtol=1e-2)
    for a, b in zip(jax.tree.leaves((got.params, got.batch_stats)), jax.tree.leaves((want.params, want.batch_stats))):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)
    if precision == "float16":
        assert int(got.loss_scale.growth_tracker) == 1  # finite: applied


def test_state_and_step_errors():
    batch = _tiny.data(1, 8)[0]
    with pytest.raises(ValueError, match=r"train_step: precision 'float16' computes in float16, which needs "
                                         r"dynamic loss scaling, but state.loss_scale is None; create the state "
                                         r"with TrainState.create\(..., precision='float16'\)"):
        STEPS["float16"](_state(), batch)
    with pytest.raises(ValueError, match=r"train_step: precision 'compute=bfloat16,params=bfloat16,output=float32' "
                                         r"keeps the parameters in bfloat16, but state.params hold \['float32'\]"):
        make_train_step(precision="compute=bfloat16,params=bfloat16")(_state(), batch)
    with pytest.raises(TypeError, match=r"TrainState.create: loss_scale must be a jaxnets.train.DynamicLossScale "
                                        r"or None, got float"):
        _state("float16", loss_scale=1024.0)
    with pytest.raises(TypeError, match=r"TrainState.create: precision must be None, a dtype name .* got dict"):
        _state({"compute": "bfloat16"})


def test_bfloat16_master_parameters():
    """params=bfloat16: the state stores bfloat16 parameters and the optimizer updates them in bfloat16."""
    policy = "compute=bfloat16,params=bfloat16"
    state = _state(policy)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
    new, _ = jax.jit(make_train_step(precision=policy))(state, _tiny.data(1, 8)[0])
    assert {x.dtype for x in jax.tree.leaves(new.params)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(new.batch_stats)} == {jnp.dtype(jnp.float32)}


# ---- fit and checkpoints: the loss scale is saved and restored ----

def test_fit_float16_resume_keeps_the_loss_scale(tmp_path):
    data = {k: np.concatenate([b[k] for b in _learnable(3, 16, seed=4)]) for k in ("image", "label")}
    options = dict(epochs=2, batch_size=16, optimizer=_tiny.optimizer(), progress=False, precision="float16")
    reference, _ = fit(MODEL, data, **options)
    fit(MODEL, data, **{**options, "epochs": 1}, checkpoint_dir=tmp_path / "run")
    resumed, history = fit(MODEL, data, **options, checkpoint_dir=tmp_path / "run", resume=True)
    assert int(resumed.loss_scale.growth_tracker) == int(resumed.step) == 6 and len(history) == 2
    assert_bitwise_equal(resumed, reference)  # loss_scale included (a STATE_FIELD)
    with pytest.raises(ValueError, match=r"fit: cannot resume from .* \{'precision': \('float16', None\)\}"):
        fit(MODEL, data, **{**options, "precision": None, "epochs": 3}, checkpoint_dir=tmp_path / "run", resume=True)


# ---- the four data-parallel modes (8 simulated devices, a subprocess) ----

@pytest.fixture(scope="module")
def parallel_float16(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel16") / "results.npz"
    proc = subprocess.run([sys.executable, str(HERE / "_parallel_worker.py"), str(out), "float16"], cwd=HERE,
                          env=worker_env("--xla_force_host_platform_device_count=8"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    with np.load(out) as f:
        return dict(f)


@pytest.mark.slow  # a subprocess with 8 simulated devices
@pytest.mark.parametrize("case", ["full", "ragged"])
@pytest.mark.parametrize("mode", ["sharded", "shard_map", "pmap"])
def test_float16_modes_match_one_device(parallel_float16, mode, case):
    """The same loss-scale decisions (skip, back off, grow) as one device, on every device; params close."""
    r = parallel_float16
    want = r[f"none/{case}/loss_scale"]
    np.testing.assert_array_equal(want, [2.0 ** 16, 2.0 ** 16, 2.0 ** 17, 2.0 ** 17, 2.0 ** 18])  # step 1 skipped
    np.testing.assert_array_equal(r[f"{mode}/{case}/loss_scale"], want)
    if mode == "pmap":
        per_device = r[f"pmap/{case}/loss_scale_per_device"]
        assert per_device.shape == (5, 8) and (per_device == want[:, None]).all()
    prefix = f"none/{case}/"
    for key in (k for k in r if k.startswith(prefix) and k[len(prefix):].startswith(("params/", "batch_stats/"))):
        np.testing.assert_allclose(r[f"{mode}/{case}/" + key[len(prefix):]], r[key], rtol=1e-2, atol=1e-2,
                                   err_msg=key)
