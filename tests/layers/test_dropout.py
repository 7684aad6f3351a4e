"""Tests of jaxnets.layers.dropout: statistics of the mask, determinism, transforms, errors.

Statistical bounds are 5 sigma of the exact binomial / sample-mean standard deviation (a false
failure has probability < 1e-6 per check), with fixed keys, so the tests are deterministic.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets.layers.dropout import dropout

N = 200_000
# One jitted dropout, reused with the same (shape, rate) across tests: each distinct (shape, dtype,
# rate) compiles a threefry program, the bulk of this file's run time.
drop = jax.jit(dropout, static_argnames=("rate", "train"))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.999])
def test_kept_fraction_scale_and_mean(key, rng, rate):
    x = rng.uniform(0.5, 1.5, N).astype(np.float32)
    y = np.asarray(drop(key, x, rate, train=True))
    assert not np.any(np.isnan(y)) and np.all(np.isfinite(y))
    kept = y != 0
    p = 1.0 - rate
    # kept fraction ~ Binomial(N, p) / N
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / N)
    # survivors are x / (1 - rate) (float32 rounding: rtol 1e-6), dropped ones exactly 0
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(p), rtol=1e-6)
    # mean preserved: E[y_i] = x_i, Var[y_i] = x_i^2 * rate / (1 - rate)
    sigma = np.sqrt(np.mean(x.astype(np.float64) ** 2) * rate / p / N)
    assert abs(y.mean(dtype=np.float64) - x.mean(dtype=np.float64)) < 5 * sigma


@pytest.mark.parametrize("rate", [0.1, 0.999])
def test_survivors_scaled_exactly_like_torch(key, rate):
    """torch.nn.functional.dropout on ones gives 1 / (1 - p); so do we, bit for bit."""
    ones = np.ones(N, np.float32)
    ours = np.unique(np.asarray(drop(key, ones, rate, train=True)))
    theirs = np.unique(torch.nn.functional.dropout(torch.ones(N), p=rate, training=True).numpy())
    np.testing.assert_array_equal(ours[ours != 0], theirs[theirs != 0])


def test_identity_when_not_training_or_rate_zero(key, rng):
    x = jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
    assert dropout(key, x, 0.5, train=False) is x
    assert dropout(key, x, 0.0, train=True) is x
    assert dropout(key, x, 0, train=True) is x          # an int 0 is a valid static rate
    assert dropout(None, x, 0.5, train=False) is x      # no key needed in evaluation


def test_same_key_same_mask_different_keys_differ(key, rng):
    x = rng.normal(size=N).astype(np.float32)
    a = np.asarray(drop(key, x, 0.5, train=True))
    b = np.asarray(drop(key, x, 0.5, train=True))
    c = np.asarray(drop(jax.random.fold_in(key, 1), x, 0.5, train=True))
    np.testing.assert_array_equal(a, b)
    assert abs(np.mean((a != 0) != (c != 0)) - 0.5) < 0.01   # independent masks disagree on half
    # raw uint32 keys (jax.random.PRNGKey) work too
    raw = drop(jax.random.PRNGKey(3), x, 0.5, train=True)
    assert abs(np.mean(np.asarray(raw) != 0) - 0.5) < 5 * np.sqrt(0.25 / N)


@pytest.mark.parametrize("rate", [0.999])
def test_gradient_is_the_scaled_mask_and_finite_at_rate_close_to_one(key, rng, rate):
    x = rng.normal(size=N).astype(np.float32)
    g = rng.normal(size=N).astype(np.float32)
    y, grad = jax.jit(jax.value_and_grad(lambda x_: jnp.sum(dropout(key, x_, rate, train=True) * g)))(x)
    assert np.isfinite(y) and np.all(np.isfinite(grad))
    kept = np.asarray(drop(key, x, rate, train=True)) != 0   # the same mask as the forward pass
    np.testing.assert_allclose(grad, np.where(kept, g / np.float32(1 - rate), 0), rtol=1e-6)


def test_vmap_over_keys_and_over_inputs(key, rng):
    x = rng.normal(size=(2, N)).astype(np.float32)
    keys = jax.random.split(key, 2)
    per_key = jax.jit(jax.vmap(lambda k, e: dropout(k, e, 0.5, train=True)))(keys, x)
    for i in range(2):   # each row is what that key gives alone (shape (N,), rate 0.5: compiled above)
        np.testing.assert_array_equal(per_key[i], drop(keys[i], x[i], 0.5, train=True))
    shared = jax.jit(jax.vmap(lambda e: dropout(key, e, 0.5, train=True)))(x)   # one key: one mask
    masks = np.asarray(shared) != 0
    np.testing.assert_array_equal(masks, np.broadcast_to(masks[0], masks.shape))


def test_bfloat16_keeps_dtype_and_scales_in_float32(key, rng):
    x = jnp.asarray(rng.normal(size=N), jnp.bfloat16)
    y = drop(key, x, 0.1, train=True)
    assert y.dtype == jnp.bfloat16
    kept = np.asarray(y != 0)
    expected = (x.astype(jnp.float32) / np.float32(0.9)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(y)[kept], np.asarray(expected)[kept])


# ---------------------------------------------------------------------------------------------
# bad input: one test each
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan")])
def test_rejects_rate_outside_unit_interval(key, rate):
    with pytest.raises(ValueError, match=r"dropout: rate \(the DROP probability\) must be in \[0, 1\)"):
        dropout(key, np.ones(3, np.float32), rate, train=True)


@pytest.mark.parametrize("train", [1, None, jnp.array(True)])
def test_rejects_non_bool_train(key, train):
    with pytest.raises(TypeError, match="dropout: train must be a Python bool"):
        dropout(key, np.ones(3, np.float32), 0.5, train=train)


def test_rejects_integer_input(key):
    with pytest.raises(TypeError, match="dropout: x must be a floating-point array, got dtype int32"):
        dropout(key, np.ones(3, np.int32), 0.5, train=True)


@pytest.mark.parametrize("bad", [0, None, np.zeros(2, np.float32), jnp.zeros(2, jnp.float32)],
                         ids=["int", "None", "numpy_float", "jax_float"])
def test_rejects_a_key_that_is_not_a_prng_key(bad):
    with pytest.raises(TypeError, match="dropout: key must be a PRNG key"):
        dropout(bad, jnp.ones((4, 4)), 0.5, train=True)


def test_rejects_a_batch_of_keys(key):
    keys = jax.random.split(key, 4)
    with pytest.raises(ValueError, match=r"dropout: key must be a single PRNG key, got a batch of keys of shape \(4,\)"):
        dropout(keys, jnp.ones((4, 4)), 0.5, train=True)
    raw = jax.random.split(jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match=r"dropout: key must be a single PRNG key \(a raw key has shape \(2,\)\)"):
        dropout(raw, jnp.ones((4, 4)), 0.5, train=True)


def test_key_is_not_needed_when_unused():
    x = jnp.ones((2, 3))
    assert dropout(None, x, 0.5, train=False) is x
    assert dropout(None, x, 0.0, train=True) is x


@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}], ids=["str", "None", "dict"])
def test_rejects_non_array_input(key, bad):
    with pytest.raises(TypeError, match="dropout: x must be an array"):
        dropout(key, bad, 0.5, train=True)
