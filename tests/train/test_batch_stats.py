"""Tests of jaxnets/train/batch_stats.py: recompute_batch_stats against numpy, layer by layer; its errors."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import jaxnets.nn as jnn
from jaxnets.data import Batches
from jaxnets.train import recompute_batch_stats
from jaxnets.train.state import TrainState

from _state_compare import assert_bitwise_equal


def _conv3x3(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'same' 3x3 convolution (cross-correlation, padding 1), NHWC x HWIO, in float64."""
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(padded[:, i:i + h, j:j + w, :] @ kernel[i, j] for i in range(3) for j in range(3))


def test_recompute_batch_stats_matches_numpy_layer_by_layer(rng):
    model = jnn.Sequential([jnn.Conv(3, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.ReLU(),
                            jnn.Conv(4, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.GlobalAvgPool(),
                            jnn.Dense(2)])
    x = rng.standard_normal((37, 5, 6, 2)).astype(np.float32) + 0.5
    state = TrainState.create(model, optax.sgd(0.1), x[:1], 0)
    # Non-trivial BN parameters and stale running statistics, as after some training.
    params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(p.dtype), state.params)
    stale = jax.tree.map(lambda s: s + 0.5, state.batch_stats)
    state = state.replace(params=params, batch_stats=stale)
    new = recompute_batch_stats(state, {"image": x, "label": np.zeros(37, np.int32)}, batch_size=16)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), new.params)
    eps = 1e-5
    x1 = _conv3x3(x.astype(np.float64), p["layers_0"]["kernel"])
    mean1, var1 = x1.mean(axis=(0, 1, 2)), x1.var(axis=(0, 1, 2), ddof=1)  # unbiased, as running_var
    # Layer 2 sees layer 1 normalised with layer 1's NEW (population) statistics.
    y1 = np.maximum((x1 - mean1) / np.sqrt(var1 + eps) * p["layers_1"]["scale"] + p["layers_1"]["bias"], 0)
    x2 = _conv3x3(y1, p["layers_3"]["kernel"])
    mean2, var2 = x2.mean(axis=(0, 1, 2)), x2.var(axis=(0, 1, 2), ddof=1)
    got = new.batch_stats
    for layer, mean, var in (("layers_1", mean1, var1), ("layers_4", mean2, var2)):
        assert got[layer]["mean"].dtype == np.float32
        np.testing.assert_allclose(got[layer]["mean"], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[layer]["var"], var, rtol=1e-5, atol=1e-5)
    # Only the statistics change; the input state is untouched.
    assert_bitwise_equal(new.replace(batch_stats=stale), state)
    np.testing.assert_array_equal(state.batch_stats["layers_1"]["mean"], stale["layers_1"]["mean"])
    # In evaluation mode the first BN now outputs per-channel mean `bias` over the data.
    h = model.apply({"params": new.params, "batch_stats": new.batch_stats}, x, train=False,
                    method=lambda m, v, train: m.layers[1](m.layers[0](v), train=train))
    np.testing.assert_allclose(np.asarray(h).mean(axis=(0, 1, 2)), p["layers_1"]["bias"], atol=1e-5)


def test_recompute_batch_stats_without_batch_norm_is_identity():
    model = jnn.Sequential([jnn.Flatten(), jnn.Dense(2)])
    state = TrainState.create(model, optax.sgd(0.1), np.zeros((1, 3, 3, 1), np.float32), 0)
    assert recompute_batch_stats(state, {"image": np.zeros((4, 3, 3, 1), np.float32)}) is state


def test_recompute_batch_stats_nchw_and_batches_equal_the_dict_form(rng):
    """An NCHW BatchNorm gets per-channel statistics over axis 1; a Batches input equals the dict input."""
    model = jnn.Sequential([jnn.BatchNorm(layout="NCHW"), jnn.Flatten(), jnn.Dense(2)])
    x = rng.standard_normal((11, 3, 4, 5)).astype(np.float32) * 2.0 + 1.0
    state = TrainState.create(model, optax.sgd(0.1), x[:1], 0)
    new = recompute_batch_stats(state, {"image": x}, batch_size=4)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(new.batch_stats["layers_0"]["mean"], x64.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.batch_stats["layers_0"]["var"], x64.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    again = recompute_batch_stats(state, Batches({"image": x}, 4, shuffle=False, drop_last=False))
    assert_bitwise_equal(again, new)


def test_recompute_batch_stats_reads_a_source(rng, tmp_path):
    """A source (here `.npy` memory maps) gives the statistics of the same images as a dict."""
    from jaxnets.data import ArraySource

    model = jnn.Sequential([jnn.Conv(3, 3), jnn.BatchNorm(), jnn.Flatten(), jnn.Dense(2)])
    x = (rng.random((13, 6, 6, 1)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(13, np.int32))
    state = TrainState.create(model, optax.sgd(0.1), x[:1], 0)
    from_dict = recompute_batch_stats(state, {"image": x}, batch_size=5)
    from_source = recompute_batch_stats(state, ArraySource(tmp_path / "x.npy", tmp_path / "y.npy"), batch_size=5)
    assert_bitwise_equal(from_source, from_dict)


class FlaxBatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
        return nn.Dense(2)(nn.BatchNorm(use_running_average=not train)(x.reshape(len(x), -1)))


def test_recompute_batch_stats_errors(rng):
    x = rng.standard_normal((4, 3, 3, 1)).astype(np.float32)
    state = TrainState.create(FlaxBatchNormNet(), optax.sgd(0.1), x[:1], 0)
    with pytest.raises(ValueError, match=r"recompute_batch_stats: the model uses flax.linen.BatchNorm at "
                                         r"'BatchNorm_0'; only jaxnets.nn.BatchNorm layers are supported"):
        recompute_batch_stats(state, {"image": x})
    model = jnn.Sequential([jnn.Flatten(), jnn.BatchNorm(), jnn.Dense(2)])
    state = TrainState.create(model, optax.sgd(0.1), x[:1], 0)
    with pytest.raises(ValueError, match=r"recompute_batch_stats: BatchNorm 'layers_1' sees 1 value\(s\) per "
                                         r"channel over the data; at least 2 are needed"):
        recompute_batch_stats(state, {"image": x[:1]})
    with pytest.raises(TypeError, match=r"recompute_batch_stats: data must be a dict with 'image' \[N, H, W, C\], "
                                        r"a Batches or a source, got list"):
        recompute_batch_stats(state, [x])
