"""Shared by the train tests and their subprocess workers: a tiny ResNet with BatchNorm and fixed data.

Kept small so 8 simulated devices x 4 modes compile and run in seconds: 8x8x3 inputs, width 4, two
basic blocks (the second downsamples with a 1x1 conv + BN shortcut, as torchvision's ResNet does).
"""
import flax.linen as nn
import jax
import numpy as np
import optax

import jaxnets.nn as jnn
from jaxnets.train.state import TrainState

NUM_CLASSES = 5
SHAPE = (8, 8, 3)


class Block(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU."""

    features: int
    stride: int = 1
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train, mask=None):
        bn = dict(axis_name=self.axis_name)
        y = jnn.Conv(self.features, 3, stride=self.stride, padding=1, use_bias=False, name="conv1")(x)
        y = jnn.ReLU()(jnn.BatchNorm(**bn, name="bn1")(y, train=train, mask=mask))
        y = jnn.Conv(self.features, 3, padding=1, use_bias=False, name="conv2")(y)
        y = jnn.BatchNorm(**bn, name="bn2")(y, train=train, mask=mask)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = jnn.Conv(self.features, 1, stride=self.stride, use_bias=False, name="downsample_0")(x)
            x = jnn.BatchNorm(**bn, name="downsample_1")(x, train=train, mask=mask)
        return jnn.ReLU()(x + y)


class TinyResNet(nn.Module):
    """conv-BN-ReLU stem, Block(width), Block(2 width, stride 2), global average pool, (Dropout), Dense."""

    num_classes: int = NUM_CLASSES
    width: int = 4
    dropout: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train, mask=None):
        x = jnn.Conv(self.width, 3, padding=1, use_bias=False, name="conv1")(x)
        x = jnn.ReLU()(jnn.BatchNorm(axis_name=self.axis_name, name="bn1")(x, train=train, mask=mask))
        x = Block(self.width, axis_name=self.axis_name, name="layer1_0")(x, train=train, mask=mask)
        x = Block(2 * self.width, stride=2, axis_name=self.axis_name, name="layer2_0")(x, train=train, mask=mask)
        x = jnn.GlobalAvgPool()(x)
        if self.dropout:
            x = jnn.Dropout(self.dropout)(x, train=train)
        return jnn.Dense(self.num_classes, name="fc")(x)


class SmallNet(nn.Module):
    """Flatten, Dense(8), (BatchNorm), ReLU, (Dropout), Dense(NUM_CLASSES): the step tests' model."""

    batch_norm: bool = True
    dropout: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train, mask=None):
        x = jnn.Dense(8)(jnn.Flatten()(x))
        if self.batch_norm:
            x = jnn.BatchNorm(axis_name=self.axis_name)(x, train=train, mask=mask)
        x = jnn.ReLU()(x)
        if self.dropout:
            x = jnn.Dropout(self.dropout)(x, train=train)
        return jnn.Dense(NUM_CLASSES)(x)


def data(num_steps: int, batch_size: int, seed: int = 0, shape: tuple = SHAPE) -> list[dict]:
    """`num_steps` uint8 image batches with int32 labels, the same in every process."""
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (batch_size,) + shape, dtype=np.uint8),
             "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)} for _ in range(num_steps)]


def optimizer():
    """SGD with momentum (torch.optim.SGD(lr=0.1, momentum=0.9) update rule)."""
    return optax.sgd(0.1, momentum=0.9)


def new_state(axis_name=None, seed: int = 0, **precision) -> TrainState:
    """A fresh TinyResNet state; `precision=`/`loss_scale=` go to `TrainState.create`."""
    model = TinyResNet(axis_name=axis_name)
    return TrainState.create(model, optimizer(), np.zeros((1,) + SHAPE, np.uint8), seed, **precision)


def to_numpy(state: TrainState) -> dict:
    """Flat {path: array} of params and batch_stats (host copies), for npz files and comparisons."""
    out = {}
    for name in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(state, name))[0]:
            key = name + "/" + "/".join(str(getattr(p, "key", p)) for p in path)
            if not leaf.is_fully_addressable:  # replicated over several processes: read the local copy
                leaf = leaf.addressable_data(0)
            out[key] = np.asarray(leaf)
    return out


def brightness_data(n: int, seed: int, *, classes: int = 3, size: int = 8) -> dict:
    """`n` uint8 `size x size x 1` images whose mean brightness encodes the class (learnable in a few steps):
    pixels uniform in [80 c, 80 c + 80) for class c (so `classes <= 3` keeps them in uint8)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, n).astype(np.int32)
    image = rng.integers(0, 80, (n, size, size, 1)) + 80 * label[:, None, None, None]
    return {"image": image.astype(np.uint8), "label": label}
