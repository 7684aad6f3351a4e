"""The closed-form backward of training-mode batch_norm (`normalization._batch_norm_train`, a custom VJP).

Checked against the unoptimised path (autodiff of the same forward, selected with the private flag
`normalization._FAST_TRAIN_PATH = False` at trace time) and against torch: the output, the running
statistics, and the gradients wrt x, scale and bias, also through the running statistics (whose
cotangents the custom VJP handles), in every layout, for bf16 input, and under vmap and grad-of-grad.
The masked and synchronised paths do not use it; a test pins that they still match.
Tolerance float32 rtol = atol = 1e-5 unless a test states otherwise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _tolerances import FLOAT32
from jaxnets.layers import normalization
from jaxnets.layers.normalization import batch_norm

TOL = FLOAT32
# (shape, layout), C = 3 everywhere
CASES = [((6, 3), "NHWC"), ((4, 5, 3), "NWC"), ((3, 4, 5, 3), "NHWC"), ((3, 3, 4, 5), "NCHW"),
         ((2, 3, 2, 4, 3), "NDHWC"), ((2, 3, 3, 2, 2), "NCDHW")]


def _channel_axis(shape, layout):
    return 1 if len(shape) > 2 and layout.startswith("NC") else len(shape) - 1


def _inputs(rng, shape, layout):
    c = shape[_channel_axis(shape, layout)]
    x = rng.normal(0.7, 1.8, shape).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    params = {"scale": rng.normal(1.0, 0.5, c).astype(np.float32), "bias": rng.normal(0.0, 0.5, c).astype(np.float32)}
    state = {"mean": rng.normal(size=c).astype(np.float32), "var": rng.uniform(0.5, 2.0, c).astype(np.float32)}
    wm, wv = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    return x, g, params, state, wm, wv


def _value_and_grad(fast, x, g, params, state, wm, wv, layout, **kwargs):
    """y, new_state and d/d(x, params) of sum(y * g) + sum(new_mean * wm) + sum(new_var * wv)."""
    def loss(x_, p_):
        y, new = batch_norm(x_, p_, state, train=True, momentum=0.3, layout=layout, **kwargs)
        return jnp.sum(y.astype(jnp.float32) * g) + jnp.sum(new["mean"] * wm) + jnp.sum(new["var"] * wv), (y, new)

    old = normalization._FAST_TRAIN_PATH
    normalization._FAST_TRAIN_PATH = fast
    try:  # the flag is read at trace time, so each call traces (and compiles) its own program
        (_, (y, new)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, params)
    finally:
        normalization._FAST_TRAIN_PATH = old
    return y, new, grads


@pytest.mark.parametrize("shape,layout", CASES)
def test_fast_path_equals_autodiff_path(rng, shape, layout):
    args = _inputs(rng, shape, layout)
    fast, ref = _value_and_grad(True, *args, layout), _value_and_grad(False, *args, layout)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, **TOL)
    y_fast, y_ref = fast[0], ref[0]
    np.testing.assert_array_equal(y_fast, y_ref)  # the forward is the same computation, bit for bit


@pytest.mark.parametrize("shape,layout", [CASES[0], CASES[2], CASES[3]])
def test_fast_path_matches_torch(rng, shape, layout):
    x, g, params, state, _, _ = _inputs(rng, shape, layout)
    zero = np.zeros_like(state["mean"])
    y, new, (gx, gp) = _value_and_grad(True, x, g, params, state, zero, zero, layout)

    channels_last = layout == "NHWC" and len(shape) > 2
    xt = torch.tensor(np.moveaxis(x, -1, 1) if channels_last else x, requires_grad=True)
    gt = torch.tensor(np.moveaxis(g, -1, 1) if channels_last else g)
    bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3, eps=1e-5, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(params["scale"]))
        bn.bias.copy_(torch.tensor(params["bias"]))
        bn.running_mean.copy_(torch.tensor(state["mean"]))
        bn.running_var.copy_(torch.tensor(state["var"]))
    yt = bn(xt)
    yt.backward(gt)
    back = (lambda a: np.moveaxis(np.asarray(a), 1, -1)) if channels_last else np.asarray
    np.testing.assert_allclose(y, back(yt.detach().numpy()), **TOL)
    np.testing.assert_allclose(gx, back(xt.grad.numpy()), **TOL)
    np.testing.assert_allclose(gp["scale"], bn.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["bias"], bn.bias.grad.numpy(), **TOL)
    np.testing.assert_allclose(new["mean"], bn.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(new["var"], bn.running_var.numpy(), **TOL)


def test_fast_path_bf16_input(rng):
    """bf16 x: dx is bf16; statistics and sums in float32, so both paths agree to bf16 rounding (2^-8)."""
    x, g, params, state, wm, wv = _inputs(rng, (4, 3, 3, 3), "NHWC")
    xb = jnp.asarray(x, jnp.bfloat16)
    fast, ref = _value_and_grad(True, xb, g, params, state, wm, wv, "NHWC"), \
        _value_and_grad(False, xb, g, params, state, wm, wv, "NHWC")
    assert fast[2][0].dtype == jnp.bfloat16 and fast[1]["mean"].dtype == jnp.float32
    np.testing.assert_array_equal(fast[0], ref[0])
    for a, b in zip(jax.tree.leaves(fast[1:]), jax.tree.leaves(ref[1:])):
        # rtol 1e-2: a bf16 gradient element holds 8 significant bits (relative rounding 4e-3).
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-2, atol=1e-2)


def test_fast_path_grad_of_grad_and_vmap(rng):
    """Reverse-over-reverse (the backward is plain jnp) and vmap over a leading axis match the autodiff path."""
    x, _, params, state, _, _ = _inputs(rng, (5, 2, 3), "NWC")

    def outer(fast):
        def inner(x_):
            def f(s):
                y, _ = batch_norm(x_, {"scale": s, "bias": params["bias"]}, state, train=True, layout="NWC")
                return jnp.sum(jnp.sin(y))
            return jnp.sum(jax.grad(f)(params["scale"]) ** 2)
        old = normalization._FAST_TRAIN_PATH
        normalization._FAST_TRAIN_PATH = fast
        try:
            return jax.jit(jax.grad(inner))(x), jax.jit(jax.vmap(lambda v: batch_norm(
                v, params, state, train=True, layout="NWC")[0]))(np.stack([x, 2 * x]))
        finally:
            normalization._FAST_TRAIN_PATH = old

    (g_fast, v_fast), (g_ref, v_ref) = outer(True), outer(False)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-5)  # a second derivative: two long sums deep
    np.testing.assert_allclose(v_fast, v_ref, **TOL)


def test_masked_path_with_all_rows_valid_equals_fast_path(rng):
    """The mask path (autodiff) and the fast path (no mask) agree when every row is valid."""
    x, g, params, state, wm, wv = _inputs(rng, (3, 4, 5, 3), "NHWC")
    fast = _value_and_grad(True, x, g, params, state, wm, wv, "NHWC")
    masked = _value_and_grad(True, x, g, params, state, wm, wv, "NHWC", mask=np.ones(3, bool))
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(masked)):
        np.testing.assert_allclose(a, b, **TOL)


def test_fast_path_is_used_only_without_mask_and_axis_name(rng, monkeypatch):
    calls = []
    real = normalization._batch_norm_train
    monkeypatch.setattr(normalization, "_batch_norm_train", lambda *a: calls.append(1) or real(*a))
    x, _, params, state, _, _ = _inputs(rng, (4, 3), "NHWC")
    batch_norm(x, params, state, train=True)
    assert len(calls) == 1
    batch_norm(x, params, state, train=True, mask=np.ones(4, bool))
    jax.vmap(lambda v: batch_norm(v, params, state, train=True, axis_name="d")[0], axis_name="d")(x[:, None])
    batch_norm(x, params, state, train=False)
    assert len(calls) == 1
