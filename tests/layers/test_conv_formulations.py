"""layers/conv_formulations.py: the CPU formulations of a convolution's three parts against XLA's plain convolution.

Each case is one formulation's domain (taps forward with one input channel, the patches data gradient up to
FEW_INPUT_CHANNELS) with odd sizes, asymmetric padding, strides per dim and dilation. Value, data gradient and
weight gradient must equal `cpu_formulations(False)` (the plain `lax.conv_general_dilated` program) to float32
rtol = atol = 1e-5 (the same products summed in another order; the longest sum here has C_out * prod(kernel) <=
400 terms of O(1) values, or N * prod(out) <= 4 * 90 for the weight gradient) and float64 1e-12; the compiled data
gradient must have no convolution where a formulation applies, and the program must be XLA's where none does.
Parity with torch goes through `conv` (tests/layers/test_conv.py), with the formulations on.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.layers import conv
from jaxnets.layers.conv_formulations import FEW_INPUT_CHANNELS, cpu_formulations

CPU = jax.default_backend() == "cpu"

# (id, x shape, kernel shape, conv kwargs)
CASES = [
    ("taps_1ch_lenet", (4, 10, 9, 1), (5, 5, 1, 6), dict(padding=2)),
    ("patches_6ch_lenet", (4, 9, 9, 6), (5, 5, 6, 16), dict()),
    ("patches_2ch_stride_dilation_asym", (3, 13, 12, 2), (3, 2, 2, 4),
     dict(stride=(2, 3), dilation=(2, 1), padding=((1, 2), (3, 0)))),
    ("taps_1ch_3d_stride", (2, 7, 6, 5, 1), (3, 2, 2, 1, 3), dict(stride=2, padding=1)),
    ("patches_1d_at_the_limit", (3, 11, FEW_INPUT_CHANNELS), (3, FEW_INPUT_CHANNELS, 2), dict(padding="SAME")),
]


def _arrays(case, dtype):
    _, x_shape, k_shape, kw = case
    keys = jax.random.split(jax.random.key(1), 3)
    x, k = jax.random.normal(keys[0], x_shape, dtype), jax.random.normal(keys[1], k_shape, dtype)
    cot = jax.random.normal(keys[2], jax.eval_shape(lambda: conv(x, k, **kw)).shape, dtype)
    return x, k, cot, kw


def _parts(kw, cot):
    """A new jitted function (the switch is read at trace time): value, data and weight gradient."""
    def parts(x, k):
        y, vjp = jax.vjp(lambda x, k: conv(x, k, **kw), x, k)
        return (y, *vjp(cot))
    return jax.jit(parts)


@pytest.mark.parametrize("dtype", (jnp.float32, jnp.float64))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_formulation_equals_the_plain_convolution(case, dtype, request):
    if dtype == jnp.float64:
        request.getfixturevalue("x64")
    x, k, cot, kw = _arrays(case, dtype)
    got = _parts(kw, cot)(x, k)
    with cpu_formulations(False):
        want = _parts(kw, cot)(x, k)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    for name, g, w in zip(("y", "dx", "dkernel"), got, want):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.skipif(not CPU, reason="the formulations are the CPU lowering")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_compiled_data_gradient_uses_the_formulation(case):
    x, k, cot, kw = _arrays(case, jnp.float32)

    def data_gradient():
        return jax.jit(lambda x, k: jax.vjp(lambda x: conv(x, k, **kw), x)[1](cot)[0])

    assert "convolution(" not in data_gradient().lower(x, k).compile().as_text()
    with cpu_formulations(False):  # XLA's own program: a convolution
        assert "convolution(" in data_gradient().lower(x, k).compile().as_text()


@pytest.mark.skipif(not CPU, reason="the formulations are the CPU lowering")
@pytest.mark.parametrize("kw,x_shape,k_shape", [
    (dict(padding=1), (2, 9, 8, FEW_INPUT_CHANNELS + 1), (3, 2, FEW_INPUT_CHANNELS + 1, 4)),  # above the limit
    (dict(stride=2, padding=1), (2, 17, 16, 16), (3, 3, 16, 4)),  # strided (tried, not kept: benchmarks/README)
    (dict(stride=2), (2, 9, 8, 12), (1, 1, 12, 5)),  # 1x1 strided, likewise
])
def test_outside_the_domains_the_program_is_xlas(kw, x_shape, k_shape):
    x = jax.random.normal(jax.random.key(0), x_shape)
    k = jax.random.normal(jax.random.key(1), k_shape)
    cot = jnp.ones(jax.eval_shape(lambda: conv(x, k, **kw)).shape)
    got = _parts(kw, cot)
    with cpu_formulations(False):
        want = _parts(kw, cot)
    for g, w in zip(got(x, k), want(x, k)):
        np.testing.assert_array_equal(g, w)
    assert got.lower(x, k).compile().as_text().count("convolution(") == 3


def test_half_precision_data_gradient_accumulates_in_float32():
    x, k, cot, kw = _arrays(CASES[1], jnp.float32)
    exact = _parts(kw, cot)(x, k)[1]
    half = _parts(kw, cot.astype(jnp.bfloat16))(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))[1]
    assert half.dtype == jnp.bfloat16
    # inputs rounded to bfloat16 (8 bits: relative 2^-8 each), products summed in float32, rounded once
    scale = float(jnp.max(jnp.abs(exact)))
    np.testing.assert_allclose(half.astype(jnp.float32), exact, rtol=0, atol=4 * 2.0**-8 * scale)
