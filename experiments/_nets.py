"""The one configurable CNN the experiments vary, and the MNIST-sample splits they train on.

``ConvNet`` is a small VGG-style network for 28 x 28 digits whose every ingredient is a switch: the
normalization (none / BatchNorm / GroupNorm), the activation, dropout, the weight initializer, the depth,
and residual connections (with ``zero_init_residual``). One network, so that an experiment changes exactly
the ingredient it asks about and nothing else.

    stem:   conv3x3(widths[0]) -> norm -> act
    stage s (s = 0 .. len(widths) - 1), blocks_per_stage blocks at width widths[s]:
        plain block:     conv3x3 -> norm -> act
        residual block:  x + conv3x3 -> norm -> act -> conv3x3 -> norm   then act   (He et al. 2016, v1;
                         a 1x1 conv + norm projection where the width changes)
        then max-pool 2x2 between stages (28 -> 14 -> 7 -> 3)
    head:   global average pool -> dropout -> dense(num_classes)

Dropout, when on, is also applied after every block's activation (``dropout`` rate; the head's too).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from jaxnets import data, init
from jaxnets import nn as jnn

NORMS = (None, "batch", "group")


class ConvNet(nn.Module):
    """VGG-style or residual CNN for [N, 28, 28, 1] images -> logits [N, num_classes].

    Attributes:
      widths: channels of each stage (stages are separated by 2x2 max-pooling).
      blocks_per_stage: blocks per stage; a plain block has one conv, a residual block two, so a plain and
        a residual net with the same ``blocks_per_stage`` differ in depth by a factor of two: compare them
        at equal numbers of conv layers (``depth`` below).
      norm: None, "batch" (``jaxnets.nn.BatchNorm``: PyTorch momentum 0.1) or "group" (``GroupNorm`` with
        ``groups`` groups).
      activation: a name for ``jaxnets.layers.get_activation`` ("relu", "tanh", "sigmoid", "leaky_relu",
        "elu", ...).
      dropout: drop rate after each block and before the head (0: none).
      residual: residual blocks (two convs and an identity or projection shortcut) instead of plain ones.
      zero_init_residual: start each residual branch's last norm scale at 0 (each block starts as the
        identity; Goyal et al. 2017). Needs ``residual`` and a norm.
      kernel_init: initializer for every conv and dense kernel; None = PyTorch's default
        (``init.pytorch_default``: U(+-1/sqrt(fan_in)), i.e. He-uniform with a = sqrt(5)).
      num_classes: outputs.
      axis_name: passed to every BatchNorm (synchronised statistics under shard_map / pmap).
    PyTorch equivalent: the same layers from torch.nn in the same order.
    """
    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    norm: str | None = None
    groups: int = 4
    activation: str = "relu"
    dropout: float = 0.0
    residual: bool = False
    zero_init_residual: bool = False
    kernel_init: Callable | None = None
    num_classes: int = 10
    axis_name: str | None = None

    @property
    def depth(self) -> int:
        """Number of weight layers: the stem, the convs of every block and the dense head."""
        return 2 + len(self.widths) * self.blocks_per_stage * (2 if self.residual else 1)

    def _norm(self, x, train: bool, zero: bool = False):
        if self.norm is None:
            return x
        scale_init = init.zeros if zero else init.ones
        if self.norm == "batch":
            return jnn.BatchNorm(axis_name=self.axis_name, scale_init=scale_init)(x, train=train)
        return jnn.GroupNorm(groups=self.groups)(x)

    def _conv(self, features: int, kernel: int = 3):
        # A conv feeding a norm needs no bias (the norm's shift replaces it), as in torchvision.
        return jnn.Conv(features, kernel, padding=kernel // 2, use_bias=self.norm is None,
                        kernel_init=self.kernel_init)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.norm not in NORMS:
            raise ValueError(f"ConvNet: norm must be one of {NORMS}, got {self.norm!r}.")
        if self.zero_init_residual and not (self.residual and self.norm):
            raise ValueError("ConvNet: zero_init_residual needs residual=True and a norm, got "
                             f"residual={self.residual}, norm={self.norm!r}.")
        act = jnn.Activation(self.activation)
        drop = jnn.Dropout(self.dropout)
        x = act(self._norm(self._conv(self.widths[0])(x), train))
        for s, width in enumerate(self.widths):
            if s > 0:
                x = jnn.MaxPool(2)(x)
            for _ in range(self.blocks_per_stage):
                if self.residual:
                    y = act(self._norm(self._conv(width)(x), train))
                    y = self._norm(self._conv(width)(y), train, zero=self.zero_init_residual)
                    shortcut = x if x.shape[-1] == width else self._norm(self._conv(width, 1)(x), train)
                    x = act(y + shortcut)
                else:
                    x = act(self._norm(self._conv(width)(x), train))
                x = drop(x, train=train)
        x = drop(jnn.GlobalAvgPool()(x), train=train)
        return jnn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


def mnist_splits(n_train: int | None = None, n_val: int | None = None, *, seed: int = 0):
    """The MNIST sample as (train, val) dicts of uint8 images [N, 28, 28, 1] and int32 labels [N].

    The 5,000 digits are split 4,000 / 1,000 (stratified, ``seed=0``: the same held-out digits in every
    experiment); ``n_train`` / ``n_val`` take a stratified subset of each (drawn with ``seed``).
    """
    train, val = data.split(data.mnist_sample(), fraction=0.2, seed=0)
    return _subset(train, n_train, seed), _subset(val, n_val, seed)


def _subset(arrays: dict, n: int | None, seed: int) -> dict:
    total = len(arrays["label"])
    if n is None or n >= total:
        return arrays
    if n < 10:
        raise ValueError(f"mnist_splits: need at least 10 examples per split (one per class), got {n}.")
    kept, _ = data.split(arrays, fraction=1 - n / total, seed=seed)
    return {k: np.asarray(v) for k, v in kept.items()}
