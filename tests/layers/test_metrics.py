"""accuracy against torch.topk on random (tie-free) logits, the documented tie rule, and its errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import layers


def torch_topk_accuracy(logits, labels, k):
    """PyTorch's usual recipe, class axis 1: (topk indices == label).any().float().mean()."""
    z = torch.tensor(logits).movedim(-1, 1)
    top = z.topk(k, dim=1).indices
    return (top == torch.tensor(labels).unsqueeze(1)).any(1).float().mean().item()


@pytest.mark.parametrize("shape", [(64, 6), (4, 3, 5, 6)])
def test_accuracy_matches_torch_topk(rng, shape):
    logits = rng.standard_normal(shape).astype(np.float32)  # continuous: no ties
    labels = rng.integers(0, shape[-1], shape[:-1])
    for k in (1, 3):
        got = layers.accuracy(logits, labels, k=k)
        assert got.dtype == jnp.float32 and got.shape == ()
        np.testing.assert_allclose(got, torch_topk_accuracy(logits, labels, k), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(layers.accuracy(logits, labels, k=shape[-1]), 1.0)


def test_accuracy_hand_computed():
    logits = jnp.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    labels = jnp.array([1, 1, 0, 2])
    assert float(layers.accuracy(logits, labels)) == 0.25  # only row 0 has its label on top
    assert float(layers.accuracy(logits, labels, k=2)) == 0.75  # row 2's label 0 is third


def test_accuracy_ties_follow_lax_top_k():
    # Equal logits: jax.lax.top_k takes the lower class index first, so with k=1 only label 1 is correct.
    logits = jnp.array([[1.0, 2.0, 2.0]] * 3)
    labels = jnp.array([0, 1, 2])
    np.testing.assert_allclose(layers.accuracy(logits, labels, k=1), 1 / 3)
    np.testing.assert_allclose(layers.accuracy(logits, labels, k=2), 2 / 3)


def test_accuracy_out_of_range_labels_are_wrong():
    logits = jnp.eye(3)
    np.testing.assert_allclose(layers.accuracy(logits, jnp.array([0, 5, -1]), k=3), 1 / 3)


def test_accuracy_jit_and_vmap(rng):
    logits = rng.standard_normal((3, 8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 8))
    f = jax.jit(lambda z, y: layers.accuracy(z, y, k=2))
    per_batch = jax.vmap(f)(logits, labels)
    np.testing.assert_allclose(per_batch, [torch_topk_accuracy(logits[i], labels[i], 2) for i in range(3)], atol=1e-7)


@pytest.mark.parametrize("k", [0, 5])
def test_accuracy_k_out_of_range_raises(k):
    with pytest.raises(ValueError, match=rf"accuracy: k must be an int in \[1, 4\], got {k}"):
        layers.accuracy(jnp.zeros((2, 4)), jnp.array([0, 1]), k=k)


def test_accuracy_k_not_int_raises():
    with pytest.raises(TypeError, match=r"accuracy: k must be an int in \[1, 4\], got float 1.5"):
        layers.accuracy(jnp.zeros((2, 4)), jnp.array([0, 1]), k=1.5)


def test_accuracy_label_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"accuracy: labels must have shape \(2,\) .*got \(3,\)"):
        layers.accuracy(jnp.zeros((2, 4)), jnp.array([0, 1, 2]))


def test_accuracy_float_labels_raise():
    with pytest.raises(TypeError, match="accuracy: labels must be integer class indices, got dtype float32"):
        layers.accuracy(jnp.zeros((2, 4)), jnp.zeros(2))


def test_accuracy_scalar_logits_raise():
    with pytest.raises(ValueError, match=r"accuracy: logits must have shape \[N, ..., K\]"):
        layers.accuracy(jnp.zeros(()), jnp.array(0))
