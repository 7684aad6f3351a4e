"""Parity of jaxnets.layers.activations with torch (forward and gradient), maxout against numpy.

Tolerance float32 rtol 1e-5, atol 1e-6 (XLA and ATen use different polynomial approximations of
exp/tanh/erf, each within a few ulp). Inputs include the kinks (0, -0) and large magnitudes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tolerances import FLOAT32_ELEMENTWISE
from jaxnets.layers.activations import (elu, gelu, get_activation, identity, leaky_relu, log_softmax, maxout,
                                        relu, sigmoid, silu, softplus, tanh)

TOL = FLOAT32_ELEMENTWISE

CASES = {   # name: (ours, torch's)
    "relu": (relu, torch.relu),
    "leaky_relu": (leaky_relu, F.leaky_relu),
    "leaky_relu_0.2": (lambda x: leaky_relu(x, negative_slope=0.2), lambda x: F.leaky_relu(x, 0.2)),
    "elu": (elu, F.elu),
    "elu_0.5": (lambda x: elu(x, alpha=0.5), lambda x: F.elu(x, alpha=0.5)),
    "sigmoid": (sigmoid, torch.sigmoid),
    "tanh": (tanh, torch.tanh),
    "gelu": (gelu, F.gelu),
    "softplus": (softplus, F.softplus),
    "silu": (silu, F.silu),
    "identity": (identity, lambda x: x * 1.0),
}


@pytest.fixture
def x_and_g(rng):
    special = [0.0, -0.0, 1e-8, -1e-8, 1.0, -1.0, 19.0, 21.0, 30.0, -30.0, 100.0, -100.0]
    x = np.concatenate([rng.normal(0.0, 3.0, 200), special]).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    return x, g


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_grad_match_torch(x_and_g, name):
    ours, theirs = CASES[name]
    x, g = x_and_g

    @jax.jit
    def value_and_vjp(x_, g_):
        y, vjp = jax.vjp(ours, x_)
        return y, vjp(g_)[0]

    y, gx = value_and_vjp(x, g)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gx))
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOL)


def test_gradients_at_the_kink_follow_torch():
    """At x = 0: relu' = 0, leaky_relu' = slope, elu' = alpha (torch's choices), checked exactly."""
    at0 = lambda f: float(jax.grad(f)(0.0))
    assert at0(relu) == 0.0
    assert at0(lambda x: leaky_relu(x, negative_slope=0.2)) == np.float32(0.2)
    assert at0(lambda x: elu(x, alpha=0.5)) == 0.5
    assert np.isfinite(float(jax.grad(elu)(100.0)))   # the unused exp branch must not overflow to NaN


def test_get_activation_returns_the_functions(x_and_g):
    expected = {"relu": relu, "leaky_relu": leaky_relu, "elu": elu, "sigmoid": sigmoid, "tanh": tanh,
                "gelu": gelu, "softplus": softplus, "silu": silu, "identity": identity, "linear": identity}
    for name, fn in expected.items():
        assert get_activation(name) is fn
    x, _ = x_and_g
    np.testing.assert_array_equal(get_activation("linear")(x), x)


def test_gelu_is_the_exact_erf_form_not_the_tanh_approximation():
    x = np.float32(1.5)
    exact = F.gelu(torch.tensor(x)).item()
    approx = F.gelu(torch.tensor(x), approximate="tanh").item()
    assert abs(exact - approx) > 1e-4                       # the check can tell the two apart
    np.testing.assert_allclose(float(gelu(x)), exact, rtol=1e-6)


def maxout_reference(x, pieces, axis):
    x = np.moveaxis(x, axis, -1)
    c = x.shape[-1]
    out = np.stack([x[..., j * pieces:(j + 1) * pieces].max(axis=-1) for j in range(c // pieces)], -1)
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("shape,pieces,layout,axis", [((2, 3, 3, 12), 3, "NHWC", -1), ((2, 12, 3), 4, "NCW", 1),
                                                      ((4, 6), 1, "NHWC", -1), ((4, 6), 6, "NCHW", 1),
                                                      ((2, 6, 3, 3, 3), 2, "NCDHW", 1)])
def test_maxout_matches_numpy_reference(rng, shape, pieces, layout, axis):
    x = rng.normal(size=shape).astype(np.float32)   # continuous: no ties, so the argmax is unique
    y, vjp = jax.vjp(lambda x_: maxout(x_, pieces, layout=layout), x)
    ref = maxout_reference(x, pieces, axis)
    np.testing.assert_array_equal(y, ref)
    # the gradient flows to the winner of each group only
    g = rng.normal(size=ref.shape).astype(np.float32)
    (gx,) = vjp(jnp.asarray(g))
    winners = x == np.repeat(ref, pieces, axis=axis)
    np.testing.assert_array_equal(gx, np.where(winners, np.repeat(g, pieces, axis=axis), 0))


def test_maxout_groups_are_consecutive_channels():
    x = np.array([[1.0, 5.0, 2.0, 0.0, 7.0, 3.0]], np.float32)
    np.testing.assert_array_equal(maxout(x, 2), [[5.0, 2.0, 7.0]])    # (1,5) (2,0) (7,3)
    np.testing.assert_array_equal(maxout(x, 3), [[5.0, 7.0]])         # (1,5,2) (0,7,3)


def test_maxout_under_jit_and_vmap(rng):
    x = rng.normal(size=(3, 4, 6)).astype(np.float32)
    f = jax.jit(jax.vmap(lambda e: maxout(e, 3)))
    np.testing.assert_array_equal(f(x), maxout_reference(x, 3, -1))


# ---------------------------------------------------------------------------------------------
# bad input: one test each
# ---------------------------------------------------------------------------------------------

def test_get_activation_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"get_activation: unknown nonlinearity 'swish'; expected one of "
                                         r"\['elu', 'gelu', 'identity', 'leaky_relu', 'linear', 'relu', "
                                         r"'sigmoid', 'silu', 'softplus', 'tanh'\]"):
        get_activation("swish")


def test_get_activation_rejects_non_string():
    with pytest.raises(TypeError, match="get_activation: nonlinearity name must be a string, got function"):
        get_activation(relu)


def test_maxout_rejects_pieces_not_dividing_channels():
    with pytest.raises(ValueError, match=r"maxout: pieces=4 must be a positive divisor of the 6 channels on "
                                         r"axis 1 of x with shape \(2, 6\)"):
        maxout(np.ones((2, 6), np.float32), 4)


def test_maxout_rejects_non_positive_pieces():
    with pytest.raises(ValueError, match="maxout: pieces must be an int >= 1, got 0"):
        maxout(np.ones((2, 6), np.float32), 0)


def test_maxout_rejects_non_int_pieces():
    with pytest.raises(TypeError, match="maxout: pieces must be an int >= 1, got float 2.0"):
        maxout(np.ones((2, 6), np.float32), 2.0)


def test_maxout_rejects_axis_out_of_range():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"maxout: axis must be an int in \[-2, 1\], "
                                                                           r"got 2"):
        maxout(np.ones((2, 6), np.float32), 2, axis=2)


def test_maxout_rejects_bad_layout():
    with pytest.raises(ValueError, match="maxout: unknown layout 'CHWN'"):
        maxout(np.ones((2, 6), np.float32), 2, layout="CHWN")
    with pytest.raises(TypeError, match="maxout: layout must be a string"):
        maxout(np.ones((2, 6), np.float32), 2, layout=1)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_maxout_axis_keyword_is_deprecated_and_still_works(rng, axis):
    x = rng.normal(size=(4, 6)).astype(np.float32)
    with pytest.warns(DeprecationWarning, match=r"maxout: axis= is deprecated .* pass layout="):
        y = maxout(x, 2, axis=axis)
    np.testing.assert_array_equal(y, maxout_reference(x, 2, axis))


@pytest.mark.parametrize("fn, name, value", [(leaky_relu, "negative_slope", 0.2), (elu, "alpha", 0.5)])
def test_positional_option_is_deprecated_and_still_works(rng, fn, name, value):
    x = rng.normal(size=(3, 4)).astype(np.float32)
    with pytest.warns(DeprecationWarning, match=rf"{fn.__name__}: passing {name} positionally is deprecated"):
        y = fn(x, value)
    np.testing.assert_array_equal(y, fn(x, **{name: value}))
    with pytest.raises(TypeError, match=rf"{fn.__name__}: takes x and the keyword-only option {name}="):
        fn(x, value, value)


@pytest.mark.parametrize("fn, name", [(leaky_relu, "negative_slope"), (elu, "alpha")])
@pytest.mark.parametrize("bad, exc", [("a", TypeError), (True, TypeError), (None, TypeError),
                                      (float("nan"), ValueError)])
def test_activation_option_bad_value_raises(fn, name, bad, exc):
    with pytest.raises(exc, match=rf"{fn.__name__}: {name} must be a"):
        fn(np.ones(3, np.float32), **{name: bad})


ALL = [relu, leaky_relu, elu, sigmoid, tanh, gelu, softplus, silu, identity, log_softmax,
       lambda x: maxout(x, 1)]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__ if f.__name__ != "<lambda>" else "maxout")
@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}], ids=["str", "None", "dict"])
def test_activation_rejects_non_array_input(fn, bad):
    name = fn.__name__ if fn.__name__ != "<lambda>" else "maxout"
    with pytest.raises(TypeError, match=rf"{name}: x must be an array"):
        fn(bad)


# ---------------------------------------------------------------------------------------------
# log_softmax
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis", [((5, 7), -1), ((2, 3, 4), 1), ((6,), 0), ((2, 3, 4), -3)])
def test_log_softmax_matches_torch(rng, shape, axis):
    x = (rng.normal(size=shape) * 10).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.log_softmax(xt, dim=axis)
    g = rng.normal(size=shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    y, vjp = jax.vjp(lambda a: log_softmax(a, axis=axis), x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vjp(jnp.asarray(g))[0], xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jax.jit(lambda a: log_softmax(a, axis=axis))(x), y)


def test_log_softmax_float64_matches_torch(rng, x64):
    x = rng.normal(size=(4, 9)) * 30
    np.testing.assert_allclose(log_softmax(jnp.asarray(x)), F.log_softmax(torch.tensor(x), -1).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_log_softmax_is_finite_for_large_logits_and_keeps_bfloat16():
    x = jnp.asarray([[1e4, -1e4, 0.0]], jnp.float32)
    assert np.all(np.isfinite(log_softmax(x)))
    xb = jnp.asarray([[1.0, 2.0, 3.0]], jnp.bfloat16)
    y = log_softmax(xb)
    assert y.dtype == jnp.bfloat16
    ref = F.log_softmax(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.bfloat16), -1).float().numpy()
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=1e-2)


@pytest.mark.parametrize("kw, x, exc, match", [
    (dict(axis=2), np.ones((2, 3), np.float32), ValueError, r"log_softmax: axis must be an int in \[-2, 1\], got 2"),
    (dict(axis=1.0), np.ones((2, 3), np.float32), TypeError, r"log_softmax: axis must be an int .*got float 1.0"),
    (dict(axis=True), np.ones((2, 3), np.float32), TypeError, r"log_softmax: axis must be an int .*got bool True"),
    ({}, np.ones((2, 3), np.int32), TypeError, r"log_softmax: x must be a floating-point array, got dtype int32"),
    ({}, np.float32(1.0), ValueError, r"log_softmax: x must have rank >= 1"),
])
def test_log_softmax_bad_input_raises(kw, x, exc, match):
    with pytest.raises(exc, match=match):
        log_softmax(x, **kw)
