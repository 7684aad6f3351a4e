"""Evaluation metrics on logits; the class axis is LAST (channels-last library; PyTorch's is axis 1)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets.checks import check_array, check_int


def accuracy(logits: jax.Array, labels: jax.Array, *, k: int = 1) -> jax.Array:
    """Top-k accuracy: the fraction of samples whose label is among the k largest logits.

    Ties: the top k are those returned by `jax.lax.top_k`, which among equal logits takes the lower
    class index first; a sample counts as correct iff its label is among those k indices. So with
    logits `[1, 2, 2]` and `k=1` only label 1 is correct (as `argmax` would say).

    Args:
      logits: `[N, K]` or `[N, ..., K]` (class axis LAST); any monotone score (probabilities work too).
      labels: integer class indices of shape `logits.shape[:-1]`; labels outside [0, K) are never correct.
      k: 1 <= k <= K.
    Returns: a float32 scalar in [0, 1], the mean over all samples (and positions, for `[N, ..., K]`).
    Raises: ValueError for k outside [1, K] or labels of the wrong shape; TypeError for a non-int k or
      non-integer labels
      or a non-array input.
    PyTorch: `(logits.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean()`.
    """
    fn = "accuracy"
    logits, labels = jnp.asarray(check_array(fn, "logits", logits)), jnp.asarray(check_array(fn, "labels", labels))
    if logits.ndim < 1:
        raise ValueError(f"{fn}: logits must have shape [N, ..., K] (classes last), got a 0-d array.")
    num_classes = logits.shape[-1]
    k = check_int(fn, "k", k, minimum=1, maximum=num_classes)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{fn}: labels must be integer class indices, got dtype {labels.dtype}.")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{fn}: labels must have shape {logits.shape[:-1]} (logits {logits.shape} without its "
                         f"last, class, axis), got {labels.shape}. The class axis is last here (PyTorch: axis 1).")
    _, top = jax.lax.top_k(logits, int(k))
    correct = jnp.any(top == labels[..., None], axis=-1)
    return jnp.mean(correct.astype(jnp.float32))
