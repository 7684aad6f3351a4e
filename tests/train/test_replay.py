"""A PyTorch recipe replayed in jaxnets from the same ported weights: a CNN with BatchNorm, SGD with momentum
and weight decay, MultiStepLR, the same batches.

Tolerances (the README's parity statement): float64, the whole trajectory to 1e-10 (losses, parameters and
BatchNorm running statistics); float32, the first 3 steps' losses to 1e-5 relative. Later float32 steps are
not compared: both sides round differently and the trajectories drift apart as torch's own does under a
1-ulp change of its initial weights.
"""
import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets.nn as jnn
from jaxnets import models, train
from jaxnets.layers import cross_entropy

STEPS, BATCH, CLASSES = 6, 8, 3
MILESTONES = (2, 4)  # MultiStepLR stepped once per step here (steps_per_epoch=1): lr 0.1, 0.1, 0.01, 0.01, 1e-3...


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                            torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.classifier = torch.nn.Linear(4 * 4 * 4, CLASSES)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Net(flax_nn.Module):
    """The same network with torch's submodule names ("." -> "_"), so `from_torch` fills it by name."""

    @flax_nn.compact
    def __call__(self, x, *, train, mask=None):
        x = jnn.Conv(4, 3, padding=1, name="features_0")(x)
        x = jnn.ReLU()(jnn.BatchNorm(name="features_1")(x, train=train, mask=mask))
        x = jnn.MaxPool(2)(x)
        return jnn.Dense(CLASSES, name="classifier")(jnn.Flatten()(x))


def _batches(dtype):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((STEPS, BATCH, 1, 8, 8)).astype(dtype)  # NCHW for torch
    labels = rng.integers(0, CLASSES, (STEPS, BATCH))
    return images, labels


def _torch_run(dtype):
    torch.manual_seed(0)
    net = TorchNet().to(torch.float64 if dtype == np.float64 else torch.float32)
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(MILESTONES), gamma=0.1)
    images, labels = _batches(dtype)
    losses = []
    net.train()
    for x, y in zip(images, labels):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    return initial, losses, {k: v.detach().numpy() for k, v in net.state_dict().items()}


def _jaxnets_run(initial, dtype):
    variables = models.from_torch(Net(), initial, input_shape=(8, 8, 1), dtype=dtype)  # the layers compute in it
    tx = train.sgd(train.schedules.multistep(0.1, MILESTONES, gamma=0.1, steps_per_epoch=1), momentum=0.9,
                   weight_decay=5e-4)
    state = train.TrainState.create(Net(), tx, np.zeros((1, 8, 8, 1), np.float32), 0)
    state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=tx.init(variables["params"]))
    step = jax.jit(train.make_train_step(cross_entropy))
    images, labels = _batches(dtype)
    losses = []
    for x, y in zip(images, labels):
        state, metrics = step(state, {"image": jnp.asarray(x.transpose(0, 2, 3, 1)), "label": jnp.asarray(y)})
        losses.append(float(metrics["loss"]) / int(metrics["count"]))
    return state, losses


@pytest.mark.usefixtures("x64")
def test_float64_replay_follows_the_whole_trajectory():
    initial, torch_losses, final = _torch_run(np.float64)
    state, losses = _jaxnets_run(initial, jnp.float64)
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-10, atol=0)
    ours = models.from_torch(Net(), final, input_shape=(8, 8, 1), dtype=jnp.float64)  # torch's, in our layout
    for name, (a, b) in {"params": (state.params, ours["params"]),
                         "batch_stats": (state.batch_stats, ours["batch_stats"])}.items():
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.dtype == jnp.float64, name
            np.testing.assert_allclose(np.asarray(x), np.asarray(y, np.float64), rtol=1e-10, atol=1e-12)
    assert torch_losses[0] != pytest.approx(torch_losses[-1], rel=1e-3)  # the recipe did train


def test_float32_replay_agrees_for_the_first_steps():
    initial, torch_losses, _ = _torch_run(np.float32)
    _, losses = _jaxnets_run(initial, jnp.float32)
    np.testing.assert_allclose(losses[:3], torch_losses[:3], rtol=1e-5)
