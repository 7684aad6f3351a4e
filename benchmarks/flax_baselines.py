"""The benchmark networks written directly in flax.linen, with a plain jitted Optax step.

This is what a user would write without jaxnets: `flax.linen.Conv`/`BatchNorm`/`Dense`, `optax.sgd`,
`optax.softmax_cross_entropy_with_integer_labels`, one `jax.jit` with the state donated. The networks
have the same layers, shapes and parameter counts as `jaxnets.models` (`lenet5`, `resnet18` with
`variant="cifar"`, `vgg11_bn` with `variant="cifar"`), so any speed difference is the library's.
Channels-last (NHWC). Precision the Flax way: every module takes `dtype` (the computation dtype; float32 by
default, `jnp.bfloat16` for mixed precision) while the parameters stay float32 (`param_dtype`), BatchNorm
reduces its statistics in float32 and the loss is computed on float32 logits.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# flax's BatchNorm momentum is the weight of the OLD statistics: 0.9 here is torch's momentum=0.1.
_bn = dict(momentum=0.9, epsilon=1e-5)


class LeNet5(nn.Module):
    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Conv(6, (5, 5), padding=2, dtype=self.dtype)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(120, dtype=self.dtype)(x))
        x = nn.relu(nn.Dense(84, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        bn = lambda: nn.BatchNorm(use_running_average=not train, dtype=self.dtype, **_bn)  # noqa: E731
        y = nn.Conv(self.planes, (3, 3), self.stride, padding=1, use_bias=False, dtype=self.dtype)(x)
        y = nn.relu(bn()(y))
        y = nn.Conv(self.planes, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(y)
        y = bn()(y)
        if self.stride != 1 or x.shape[-1] != self.planes:
            x = bn()(nn.Conv(self.planes, (1, 1), self.stride, use_bias=False, dtype=self.dtype)(x))
        return nn.relu(y + x)


class ResNet18(nn.Module):
    """CIFAR stem: 3x3 stride-1 conv, BN, ReLU, no max pool; stages 64-128-256-512, two blocks each."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(64, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype, **_bn)(x))
        for i, planes in enumerate((64, 128, 256, 512)):
            for j in range(2):
                x = BasicBlock(planes, 2 if i > 0 and j == 0 else 1, dtype=self.dtype)(x, train=train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(jnp.mean(x, axis=(1, 2)))


class VGG11BN(nn.Module):
    """CIFAR VGG-11 with BN: 3x3 convs (with bias, as torchvision's vgg11_bn), five 2x2 pools, Dense(512 -> 10)."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                x = nn.max_pool(x, (2, 2), (2, 2))
            else:
                x = nn.Conv(v, (3, 3), padding=1, dtype=self.dtype)(x)
                x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype, **_bn)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x.reshape(x.shape[0], -1))


MODELS = {"lenet5": LeNet5, "resnet18": ResNet18, "vgg11_bn": VGG11BN}


def create(name: str, *, dtype=jnp.float32) -> nn.Module:
    """The network `name`, computing in `dtype` (float32 parameters whatever `dtype`)."""
    return MODELS[name](dtype=dtype)


def init(model: nn.Module, x, tx: optax.GradientTransformation, seed: int = 0) -> dict[str, Any]:
    """Variables and optimizer state: `{"params", "batch_stats", "opt_state"}`."""
    variables = model.init(jax.random.key(seed), x[:1], train=False)
    params = variables["params"]
    return {"params": params, "batch_stats": variables.get("batch_stats", {}), "opt_state": tx.init(params)}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation):
    """`step(state, images, labels) -> (state, loss)`: the plain Flax/Optax training step, jitted, state donated."""

    def step(state, images, labels):
        def loss_fn(params):
            variables = {"params": params}
            if state["batch_stats"]:
                variables["batch_stats"] = state["batch_stats"]
                logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
            else:
                logits, updates = model.apply(variables, images, train=True), {}
            # float32 logits for the loss (a no-op in float32)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()
            return loss, updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        deltas, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], deltas),
                "batch_stats": updates.get("batch_stats", state["batch_stats"]),
                "opt_state": opt_state}, loss

    return jax.jit(step, donate_argnums=0)


def make_predict(model: nn.Module):
    """`predict(variables, images) -> logits` in inference mode, jitted."""
    return jax.jit(lambda variables, images: model.apply(variables, images, train=False).astype(jnp.float32))
