"""The closed-form derivative of training-mode batch_norm (`normalization._batch_norm_train`, a custom JVP
whose transpose is the closed-form backward).

Checked against the unoptimised path (autodiff of the same forward, selected with the private flag
`normalization.closed_form_derivative(False)` at trace time) and against torch: the output, the running
statistics, and the gradients wrt x, scale and bias, also through the running statistics (whose
cotangents the rule handles), in every layout, for bf16 input, and under vmap and grad-of-grad; reverse mode
against the custom VJP it replaced (`benchmarks.bn_forward_mode.batch_norm_train_vjp`); forward mode (jvp,
jacfwd, hessian) against the autodiff path and finite differences in float64.
The masked and synchronised paths do not use it; a test pins that they still match.
Tolerance float32 rtol = atol = 1e-5 unless a test states otherwise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _tolerances import FLOAT32
from benchmarks.bn_forward_mode import batch_norm_train_vjp
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

    with normalization.closed_form_derivative(fast):  # read at trace time: each call compiles its own program
        (_, (y, new)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, params)
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
        with normalization.closed_form_derivative(fast):
            return jax.jit(jax.grad(inner))(x), jax.jit(jax.vmap(lambda v: batch_norm(
                v, params, state, train=True, layout="NWC")[0]))(np.stack([x, 2 * x]))

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




_paths = normalization.closed_form_derivative  # `with _paths(True)`: the custom-JVP path; False: autodiff


@pytest.mark.parametrize("shape,layout", CASES)
def test_reverse_mode_equals_the_old_custom_vjp(rng, shape, layout):
    """The transpose of the custom JVP gives the cotangents of the custom VJP it replaced (closed form,
    same formula, other association of the sums): to float32 rounding, rtol = atol = 2e-6."""
    x, g, params, _, wm, wv = _inputs(rng, shape, layout)
    axes = tuple(a for a in range(len(shape)) if a != _channel_axis(shape, layout))

    def loss(fn):
        def f(x_, s, b):
            y, mean, var = fn(x_, s, b, 1e-5, axes)
            return jnp.sum(y * g) + jnp.sum(mean * wm) + jnp.sum(var * wv)
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, params["scale"], params["bias"])

    new, old = loss(normalization._batch_norm_train), loss(batch_norm_train_vjp)
    for a, b in zip(new, old):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_forward_mode_equals_autodiff_path_and_finite_differences(rng, x64):
    """jvp, jacfwd and hessian through the fast path (float64): equal to the autodiff path's to 1e-10,
    jvp equal to a central finite difference (step 1e-5, error O(h^2) ~ 1e-9) to 1e-7."""
    x, g, params, state, wm, wv = (np.asarray(a, np.float64) if isinstance(a, np.ndarray) else
                                   {k: np.asarray(v, np.float64) for k, v in a.items()}
                                   for a in _inputs(rng, (3, 2, 2, 3), "NHWC"))
    tx = rng.normal(size=x.shape)
    ts = {"scale": rng.normal(size=3), "bias": rng.normal(size=3)}

    def f(x_, p):
        y, new = batch_norm(x_, p, state, train=True, momentum=0.3)
        return jnp.sum(jnp.tanh(y) * g) + jnp.sum(new["mean"] * wm) + jnp.sum(new["var"] * wv)

    def derivatives():
        out, tangent = jax.jvp(f, (x, params), (tx, ts))
        jf = jax.jacfwd(f, argnums=(0, 1))(x, params)
        hess = jax.hessian(lambda s: f(x, {"scale": s, "bias": params["bias"]}))(params["scale"])
        hx = jax.hessian(lambda v: f(jnp.concatenate([v, x[1:]]), params))(x[:1])  # wrt the first row
        return out, tangent, jf, hess, hx

    with _paths(True):
        fast = derivatives()
    with _paths(False):
        ref = derivatives()
    assert fast[1].dtype == jnp.float64
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    h = 1e-5
    shifted = [f(x + s * h * tx, {k: params[k] + s * h * ts[k] for k in params}) for s in (1, -1)]
    np.testing.assert_allclose(fast[1], (shifted[0] - shifted[1]) / (2 * h), rtol=1e-7, atol=1e-7)
    # jacfwd agrees with jacrev (the transpose of the same rule).
    with _paths(True):
        jr = jax.jacrev(f, argnums=(0, 1))(x, params)
    for a, b in zip(jax.tree.leaves(fast[2]), jax.tree.leaves(jr)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_forward_mode_bf16_input(rng):
    """jvp with bf16 x: the output tangent is bf16, equal to the autodiff path's to bf16 rounding (rtol 1e-2)."""
    x, _, params, state, _, _ = _inputs(rng, (4, 3, 3, 3), "NHWC")
    xb, tb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(rng.normal(size=x.shape), jnp.bfloat16)
    results = []
    for fast in (True, False):
        with _paths(fast):
            results.append(jax.jvp(lambda v: batch_norm(v, params, state, train=True)[0], (xb,), (tb,))[1])
    assert results[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(results[0], np.float32), np.asarray(results[1], np.float32),
                               rtol=1e-2, atol=1e-2)
