"""Flax NNX users: (1) a registry model inside NNX code through `flax.nnx.bridge.ToNNX`, (2) `jaxnets.layers`
functions inside an `nnx.Module` (BatchNorm statistics in `nnx.BatchStat`, dropout keys from `nnx.Rngs`), both
trained with `nnx.Optimizer` to the same numbers as jaxnets' linen path (`TrainState` + `make_train_step`).

Dropout: linen's `nn.Dropout` draws its key with `make_rng("dropout")` (the given key folded with the module's
path), so the parity runs use rate 0 (every other part of the step is compared); the dropout keys of each
path are checked on their own (`test_to_nnx_dropout_key`, `test_layers_dropout_draws_from_nnx_rngs`).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen
from flax import nnx
from flax.traverse_util import flatten_dict

from jaxnets import init, layers, models
from jaxnets import nn as jnn
from jaxnets.layers.losses import cross_entropy
from jaxnets.train import TrainState, adam, make_train_step

STEPS = 3
TOL = dict(rtol=1e-5, atol=1e-6)  # float32: the same arithmetic, compiled as different programs


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (16, 28, 28, 1)).astype(np.uint8), "label": rng.integers(0, 10, 16)}


def _linen_run(model, batch, tx, seed=0):
    """jaxnets' linen path: `TrainState.create` and `STEPS` compiled `make_train_step` steps."""
    state = TrainState.create(model, tx, batch["image"][:1], seed)
    step = jax.jit(make_train_step())
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]) / int(metrics["count"]))
    return state, losses


def _train_nnx(net, batch, tx):
    """`STEPS` steps of an NNX model called as `net(x, train=True)`: `nnx.Optimizer(net, tx, wrt=nnx.Param)`,
    `nnx.value_and_grad`, `optimizer.update(net, grads)`, under `nnx.jit`; the same loss as `make_train_step`."""
    optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(net, optimizer, images, labels):
        x = images.astype(jnp.float32) / 255.0  # data.augment.to_float, as the linen step preprocesses

        def loss_fn(net):
            return cross_entropy(net(x, train=True), labels)

        loss, grads = nnx.value_and_grad(loss_fn)(net)
        optimizer.update(net, grads)
        return loss

    return [float(train_step(net, optimizer, batch["image"], batch["label"])) for _ in range(STEPS)]


def _assert_same(nnx_state, linen_tree, **tol):
    got = flatten_dict(nnx.to_pure_dict(nnx_state))
    want = flatten_dict(linen_tree)
    assert sorted(got) == sorted(want)
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, err_msg="/".join(path), **tol)


# ----------------------------------------------------------------------------------------------
# (1) A registry model inside NNX code: nnx.bridge.ToNNX
# ----------------------------------------------------------------------------------------------
class ToNNXTrainable(nnx.Module):
    """A registry model as an NNX module; `train=True` updates its BatchNorm statistics in place."""

    def __init__(self, model: linen.Module, sample, *, key):
        # rngs=key initialises with exactly `key`, as linen's model.init({"params": key}, ...) does.
        self.net = nnx.bridge.ToNNX(model).lazy_init(sample, train=False, rngs=key)

    def __call__(self, x, *, train: bool):
        return self.net(x, train=train, mutable=["batch_stats"] if train else False)


def test_registry_model_through_to_nnx_trains_as_the_linen_path(batch):
    model = models.create("mlp", variant="mnist", hidden=(32, 16), batch_norm_layers=1, num_classes=10)
    tx = optax.sgd(0.1, momentum=0.9)
    state, linen_losses = _linen_run(model, batch, tx, seed=0)
    init_key, _ = jax.random.split(jax.random.key(0))  # TrainState.create's init key for seed 0
    net = ToNNXTrainable(model, batch["image"][:1].astype(np.float32), key=init_key)
    nnx_losses = _train_nnx(net, batch, tx)
    np.testing.assert_allclose(nnx_losses, linen_losses, **TOL)
    assert nnx_losses[-1] < nnx_losses[0]  # it trains
    _assert_same(nnx.state(net.net, nnx.Param), state.params, **TOL)
    _assert_same(nnx.state(net.net, nnx.BatchStat), state.batch_stats, **TOL)
    # Evaluation mode: the running statistics, nothing mutated.
    x = batch["image"].astype(np.float32) / 255.0
    np.testing.assert_allclose(net(x, train=False), model.apply(state.variables, x, train=False), **TOL)


def test_to_nnx_dropout_key():
    """`rngs=nnx.Rngs(dropout=k)` on a ToNNX call gives the linen model the key `fold_in(k, 0)` (the stream's
    first draw): the same mask as `model.apply(..., rngs={"dropout": jax.random.fold_in(k, 0)})`."""
    model = models.create("mlp", variant="mnist", hidden=(32,), dropout=0.5, num_classes=10)
    x = np.random.default_rng(1).random((4, 28, 28, 1)).astype(np.float32)
    net = nnx.bridge.ToNNX(model).lazy_init(x, train=False, rngs=jax.random.key(0))
    variables = model.init(jax.random.key(0), x, train=False)
    k = jax.random.key(5)
    got = net(x, train=True, rngs=nnx.Rngs(dropout=k))
    np.testing.assert_array_equal(got, model.apply(variables, x, train=True, rngs={"dropout": jax.random.fold_in(k, 0)}))
    assert not np.allclose(got, model.apply(variables, x, train=False))  # dropout did act


# ----------------------------------------------------------------------------------------------
# (2) jaxnets.layers functions inside an nnx.Module
# ----------------------------------------------------------------------------------------------
class SmallCNN(nnx.Module):
    """conv 3x3 (no bias) -> BatchNorm -> ReLU -> max-pool 2 -> dropout -> linear, from `jaxnets.layers`.

    Parameters are `nnx.Param`, the BatchNorm running statistics `nnx.BatchStat` (updated in training,
    PyTorch's momentum), dropout keys come from the module's `nnx.Rngs` stream "dropout".
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, *, spatial: int, rate: float,
                 rngs: nnx.Rngs):
        self.kernel = nnx.Param(init.pytorch_default()(rngs.params(), (3, 3, in_channels, channels), jnp.float32))
        params, stats = layers.init_batch_norm(channels)
        self.scale, self.bias = nnx.Param(params["scale"]), nnx.Param(params["bias"])
        self.mean, self.var = nnx.BatchStat(stats["mean"]), nnx.BatchStat(stats["var"])
        features = channels * (spatial // 2) ** 2
        self.w = nnx.Param(init.pytorch_default(kernel_layout="IO")(rngs.params(), (features, num_classes), jnp.float32))
        self.b = nnx.Param(init.pytorch_default_bias(features)(rngs.params(), (num_classes,), jnp.float32))
        self.rate, self.rngs = rate, rngs

    def __call__(self, x, *, train: bool):
        x = layers.conv(x, self.kernel[...], padding=1)
        x, stats = layers.batch_norm(x, {"scale": self.scale[...], "bias": self.bias[...]},
                                     {"mean": self.mean[...], "var": self.var[...]}, train=train)
        if train:
            self.mean[...], self.var[...] = stats["mean"], stats["var"]
        x = layers.max_pool(layers.relu(x), 2)
        x = x.reshape(x.shape[0], -1)
        if train and self.rate > 0:
            x = layers.dropout(self.rngs.dropout(), x, self.rate, train=True)
        return layers.linear(x, self.w[...], self.b[...])


class LinenCNN(linen.Module):
    """The same network from `jaxnets.nn` (linen)."""
    channels: int
    num_classes: int
    rate: float

    @linen.compact
    def __call__(self, x, *, train: bool):
        x = jnn.Conv(self.channels, 3, padding=1, use_bias=False)(x)
        x = jnn.BatchNorm()(x, train=train)
        x = jnn.MaxPool(2)(layers.relu(x))
        x = x.reshape(x.shape[0], -1)
        x = jnn.Dropout(self.rate)(x, train=train)
        return jnn.Dense(self.num_classes)(x)


def test_layers_in_an_nnx_module_train_as_the_linen_model(batch):
    tx = adam(1e-3)  # jaxnets.train.adam (torch.optim.Adam)
    linen_model = LinenCNN(channels=8, num_classes=10, rate=0.0)
    state, linen_losses = _linen_run(linen_model, batch, tx)
    net = SmallCNN(1, 8, 10, spatial=28, rate=0.0, rngs=nnx.Rngs(params=1, dropout=2))
    # The same initial weights: the linen model's, copied into the NNX variables.
    first = TrainState.create(linen_model, tx, batch["image"][:1], 0)
    p = first.params
    net.kernel[...], net.w[...], net.b[...] = p["Conv_0"]["kernel"], p["Dense_0"]["kernel"], p["Dense_0"]["bias"]
    net.scale[...], net.bias[...] = p["BatchNorm_0"]["scale"], p["BatchNorm_0"]["bias"]
    nnx_losses = _train_nnx(net, batch, tx)
    np.testing.assert_allclose(nnx_losses, linen_losses, **TOL)
    assert nnx_losses[-1] < nnx_losses[0]
    got = state.params, state.batch_stats["BatchNorm_0"]
    np.testing.assert_allclose(net.kernel[...], got[0]["Conv_0"]["kernel"], **TOL)
    np.testing.assert_allclose(net.w[...], got[0]["Dense_0"]["kernel"], **TOL)
    np.testing.assert_allclose(net.scale[...], got[0]["BatchNorm_0"]["scale"], **TOL)
    np.testing.assert_allclose(net.mean[...], got[1]["mean"], **TOL)
    np.testing.assert_allclose(net.var[...], got[1]["var"], **TOL)
    assert set(nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))) == {"mean", "var"}  # the optimizer leaves them alone
    x = batch["image"].astype(np.float32) / 255.0
    np.testing.assert_allclose(net(x, train=False), linen_model.apply(state.variables, x, train=False), **TOL)


def test_layers_dropout_draws_from_nnx_rngs():
    """Each training call draws the next key of the "dropout" stream (`fold_in(key, n)` for the n-th draw) and
    applies `layers.dropout` with it; evaluation draws nothing and drops nothing."""
    net = SmallCNN(1, 4, 3, spatial=4, rate=0.5, rngs=nnx.Rngs(params=0, dropout=7))
    x = np.random.default_rng(2).random((64, 4, 4, 1)).astype(np.float32)
    first, second = net(x, train=True), net(x, train=True)
    assert not np.allclose(first, second)  # a new mask each step

    def manual(n):  # the same computation with the stream's n-th key, from the functions
        h = layers.conv(x, net.kernel[...], padding=1)
        h, _ = layers.batch_norm(h, {"scale": net.scale[...], "bias": net.bias[...]},
                                 {"mean": jnp.zeros(4), "var": jnp.ones(4)}, train=True)
        h = layers.max_pool(layers.relu(h), 2).reshape(64, -1)
        h = layers.dropout(jax.random.fold_in(jax.random.key(7), n), h, 0.5, train=True)
        return layers.linear(h, net.w[...], net.b[...])

    np.testing.assert_allclose(first, manual(0), **TOL)
    np.testing.assert_allclose(second, manual(1), **TOL)
    np.testing.assert_array_equal(net(x, train=False), net(x, train=False))  # no key drawn, no mask
