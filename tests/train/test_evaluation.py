"""Tests of jaxnets/train/evaluation.py: tta_predict and ensemble_predict against hand-computed averages
(moved from jaxnets.data.augment); `evaluate` is tested with `fit` in test_fit.py."""
from functools import partial

import jax
import numpy as np
import pytest

from jaxnets.data.augment import hflip
from jaxnets.train import ensemble_predict, tta_predict


def images_float(rng, shape):
    return rng.normal(size=shape).astype(np.float32)


def linear_apply(variables, x, *, train):
    assert train is False  # prediction must run the model in evaluation mode
    return x.reshape(x.shape[0], -1) @ variables["w"] + variables["b"]


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_tta_predict_averages_softmax_over_transforms(rng):
    x = images_float(rng, (4, 3, 4, 2))
    variables = {"w": rng.normal(size=(24, 5)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
    got = tta_predict(linear_apply, variables, x, transforms=(lambda images: images, hflip))
    flat = lambda images: images.reshape(len(images), -1).astype(np.float64)  # noqa: E731
    w, b = variables["w"].astype(np.float64), variables["b"].astype(np.float64)
    expected = (np_softmax(flat(x) @ w + b) + np_softmax(flat(x[:, :, ::-1]) @ w + b)) / 2
    # float32 logits of a 24-term dot product against a float64 reference.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(got, axis=-1), 1.0, rtol=1e-6)
    single = tta_predict(linear_apply, variables, x, transforms=[lambda images: images])
    np.testing.assert_allclose(single, np_softmax(flat(x) @ w + b), rtol=1e-5, atol=1e-6)
    jitted = jax.jit(partial(tta_predict, linear_apply, transforms=(lambda images: images, hflip)))
    np.testing.assert_allclose(jitted(variables, x), got, rtol=1e-6, atol=1e-7)


def test_ensemble_predict_weighted_average(rng):
    x = rng.normal(size=(5, 6)).astype(np.float32)
    members = [(linear_apply, {"w": rng.normal(size=(6, 3)).astype(np.float32), "b": np.zeros(3, np.float32)})
               for _ in range(3)]
    probs = [np_softmax(x.astype(np.float64) @ m[1]["w"].astype(np.float64)) for m in members]
    np.testing.assert_allclose(ensemble_predict(members, x), sum(probs) / 3, rtol=1e-5, atol=1e-6)
    got = ensemble_predict(members, x, weights=[1.0, 3.0, 0.0])
    np.testing.assert_allclose(got, 0.25 * probs[0] + 0.75 * probs[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ensemble_predict(members[:1], x), probs[0], rtol=1e-5, atol=1e-6)


def test_errors():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="tta_predict: transforms must be a non-empty sequence"):
        tta_predict(linear_apply, {}, x, transforms=())
    with pytest.raises(TypeError, match=r"tta_predict: transforms\[1\] must be a function"):
        tta_predict(linear_apply, {}, x, transforms=(hflip, "flip"))
    member = (linear_apply, {"w": np.zeros((16, 2), np.float32), "b": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="ensemble_predict: members must be a non-empty sequence"):
        ensemble_predict([], x)
    with pytest.raises(TypeError, match=r"ensemble_predict: members\[0\] must be an \(apply_fn, variables\) pair"):
        ensemble_predict([linear_apply], x)
    with pytest.raises(ValueError, match=r"ensemble_predict: weights must have one value per member \(2\), got "
                                         r"shape \(3,\)"):
        ensemble_predict([member, member], x, weights=[1, 2, 3])
    with pytest.raises(ValueError, match=r"ensemble_predict: weights must be non-negative and not all zero, got "
                                         r"\[1.0, -1.0\]"):
        ensemble_predict([member, member], x, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="ensemble_predict: weights must be non-negative and not all zero"):
        ensemble_predict([member, member], x, weights=[0, 0])
