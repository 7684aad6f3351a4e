"""jaxnets.nn: every module equals its jaxnets.layers function on the same parameters; a small conv net
built from modules equals the same net written with layers (outputs AND new batch_stats, train and eval);
BatchNorm state handling; Sequential's train passing; PyTorch's default init; error messages."""
import math

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets.nn.dropout as nn_dropout_module
from jaxnets import layers
from jaxnets import nn as jnn

# Module and function run the same jax ops in the same order, so results are compared bit for bit.
exact = np.testing.assert_array_equal


def _x(rng, shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


# ------------------------------------------------------------------------------------------------
# A small conv net, as modules and as layers functions
# ------------------------------------------------------------------------------------------------

class SmallNet(flax_nn.Module):
    rate: float = 0.5

    @flax_nn.compact
    def __call__(self, x, *, train):
        x = jnn.Conv(4, 3, padding=1, use_bias=False, name="conv")(x)
        x = jnn.BatchNorm(name="bn")(x, train=train)
        x = jnn.ReLU()(x)
        x = jnn.MaxPool(2)(x)
        x = jnn.Dropout(self.rate, name="drop")(x, train=train)
        x = jnn.Flatten()(x)
        return jnn.Dense(3, name="fc")(x)


def small_net_layers(params, stats, x, *, train, key, rate=0.5):
    """SmallNet written directly with jaxnets.layers."""
    y = layers.conv(x, params["conv"]["kernel"], padding=1)
    y, new_stats = layers.batch_norm(y, params["bn"], stats, train=train)
    y = layers.relu(y)
    y = layers.max_pool(y, 2)
    y = layers.dropout(key, y, rate, train=train)
    y = layers.flatten(y)
    return layers.linear(y, params["fc"]["kernel"], params["fc"]["bias"]), new_stats


@pytest.fixture
def small_net(key, rng):
    model = SmallNet()
    x = _x(rng, (4, 6, 6, 2))
    variables = model.init(key, x, train=False)
    # Non-trivial running statistics, so that eval mode really uses them.
    variables = {"params": variables["params"],
                 "batch_stats": {"bn": {"mean": _x(rng, (4,)),
                                        "var": jnp.asarray(rng.uniform(0.5, 2, 4), jnp.float32)}}}
    return model, variables, x


def _capture_dropout_keys(monkeypatch):
    """Record the key each Dropout module passes to layers.dropout (the one drawn by make_rng)."""
    keys = []

    def recording(key, x, rate, *, train):
        keys.append(key)
        return layers.dropout(key, x, rate, train=train)

    monkeypatch.setattr(nn_dropout_module, "dropout", recording)
    return keys


def test_small_net_train_equals_layers(small_net, monkeypatch):
    model, variables, x = small_net
    keys = _capture_dropout_keys(monkeypatch)
    y, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(7)})
    assert len(keys) == 1 and keys[0] is not None
    ref, ref_stats = small_net_layers(variables["params"], variables["batch_stats"]["bn"], x, train=True,
                                      key=keys[0])
    exact(y, ref)
    exact(updates["batch_stats"]["bn"]["mean"], ref_stats["mean"])
    exact(updates["batch_stats"]["bn"]["var"], ref_stats["var"])
    # The statistics really moved and dropout really dropped something.
    assert not np.allclose(updates["batch_stats"]["bn"]["mean"], variables["batch_stats"]["bn"]["mean"])
    y_eval_dropout_off = small_net_layers(variables["params"], variables["batch_stats"]["bn"], x, train=True,
                                          key=keys[0], rate=0.0)[0]
    assert not np.allclose(y, y_eval_dropout_off)


def test_small_net_eval_equals_layers_and_mutates_nothing(small_net, monkeypatch):
    model, variables, x = small_net
    keys = _capture_dropout_keys(monkeypatch)
    y = model.apply(variables, x, train=False)  # no "dropout" rng, no mutable collection needed
    assert keys == [None]  # no key is drawn in eval mode
    ref, _ = small_net_layers(variables["params"], variables["batch_stats"]["bn"], x, train=False, key=None)
    exact(y, ref)
    _, updates = model.apply(variables, x, train=False, mutable=["batch_stats"])
    jax.tree.map(exact, updates["batch_stats"], variables["batch_stats"])


def test_small_net_jit_equals_eager(small_net):
    model, variables, x = small_net
    rngs = {"dropout": jax.random.key(3)}

    def run(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs)

    eager, jitted = run(variables, x), jax.jit(run)(variables, x)
    # XLA may fuse the compiled graph differently from op-by-op execution: float32 rounding only.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager, jitted)


def test_dropout_key_comes_from_dropout_stream(small_net):
    model, variables, x = small_net

    def run(seed):
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(seed)})[0]

    exact(run(1), run(1))
    assert not np.allclose(run(1), run(2))
    with pytest.raises(Exception, match="dropout"):  # Flax: no "dropout" rng stream given
        model.apply(variables, x, train=True, mutable=["batch_stats"])


def test_dropout_module_rate_zero_draws_no_key(rng):
    x = _x(rng, (3, 5))
    exact(jnn.Dropout(0.0).apply({}, x, train=True), x)  # no rngs needed
    exact(jnn.Dropout(0.5).apply({}, x, train=False), x)


# ------------------------------------------------------------------------------------------------
# BatchNorm state handling
# ------------------------------------------------------------------------------------------------

def test_batchnorm_init_does_not_update_stats(key, rng):
    x = _x(rng, (4, 3, 3, 5)) + 3.0
    variables = jnn.BatchNorm().init(key, x, train=True)
    exact(variables["batch_stats"]["mean"], np.zeros(5, np.float32))
    exact(variables["batch_stats"]["var"], np.ones(5, np.float32))
    exact(variables["params"]["scale"], np.ones(5, np.float32))
    exact(variables["params"]["bias"], np.zeros(5, np.float32))


def test_batchnorm_train_requires_mutable_batch_stats(key, rng):
    x = _x(rng, (4, 5))
    bn = jnn.BatchNorm()
    variables = bn.init(key, x, train=False)
    with pytest.raises(ValueError, match=r"BatchNorm: train=True updates the running statistics.*mutable"):
        bn.apply(variables, x, train=True)


@pytest.mark.parametrize("layout,shape", [("NHWC", (4, 3, 3, 5)), ("NCHW", (4, 5, 3, 3)), ("NHWC", (6, 5)),
                                          ("NCHW", (4, 5, 7))])
def test_batchnorm_equals_layers(key, rng, layout, shape):
    x = _x(rng, shape)
    bn = jnn.BatchNorm(momentum=0.3, eps=1e-3, layout=layout)
    variables = bn.init(key, x, train=False)
    params = {"scale": _x(rng, (5,)), "bias": _x(rng, (5,))}
    state = {"mean": _x(rng, (5,)), "var": jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32)}
    variables = {"params": params, "batch_stats": state}
    for train in (True, False):
        y, upd = bn.apply(variables, x, train=train, mutable=["batch_stats"])
        ref, ref_state = layers.batch_norm(x, params, state, train=train, momentum=0.3, eps=1e-3, layout=layout)
        exact(y, ref)
        jax.tree.map(exact, upd["batch_stats"], ref_state)


def test_batchnorm_mask_passes_through(key, rng):
    x = _x(rng, (6, 4))
    mask = jnp.array([True, True, False, True, False, True])
    bn = jnn.BatchNorm()
    variables = bn.init(key, x, train=False)
    y, upd = bn.apply(variables, x, train=True, mask=mask, mutable=["batch_stats"])
    params, state = layers.init_batch_norm(4)
    ref, ref_state = layers.batch_norm(x, params, state, train=True, mask=mask)
    exact(y, ref)
    jax.tree.map(exact, upd["batch_stats"], ref_state)
    y_unmasked = bn.apply(variables, x, train=True, mutable=["batch_stats"])[0]
    assert not np.allclose(y, y_unmasked)


def test_batchnorm_axis_name_passes_through(key, rng):
    """Synchronised BN over a vmapped 'device' axis equals BN on the whole batch."""
    x = _x(rng, (8, 3, 3, 4))
    bn = jnn.BatchNorm(axis_name="devices")
    variables = bn.init(key, x, train=False)

    def shard(xs):
        return bn.apply(variables, xs, train=True, mutable=["batch_stats"])

    y_sharded, upd = jax.vmap(shard, axis_name="devices")(x.reshape(2, 4, 3, 3, 4))
    y_full, upd_full = jnn.BatchNorm().apply(variables, x, train=True, mutable=["batch_stats"])
    # Sums split into two partial sums and a psum: float32 rounding differences only.
    np.testing.assert_allclose(y_sharded.reshape(x.shape), y_full, rtol=1e-5, atol=1e-5)
    for name in ("mean", "var"):
        np.testing.assert_allclose(upd["batch_stats"][name][0], upd_full["batch_stats"][name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(upd["batch_stats"][name][1], upd_full["batch_stats"][name], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Each module against its layers function
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opts,layout,shape", [
    (dict(features=6, kernel_size=3), "NHWC", (2, 7, 7, 4)),
    (dict(features=6, kernel_size=(3, 2), stride=2, padding=(1, 0), dilation=(1, 2), groups=2), "NHWC", (2, 9, 8, 4)),
    (dict(features=6, kernel_size=3, padding="SAME", use_bias=False), "NCHW", (2, 4, 7, 7)),
    (dict(features=3, kernel_size=3, stride=2), "NWC", (2, 9, 4)),
    (dict(features=8, kernel_size=2, groups=4), "NCDHW", (1, 4, 3, 4, 3)),
])
def test_conv_equals_layers(key, rng, opts, layout, shape):
    module = jnn.Conv(**opts, layout=layout)
    x = _x(rng, shape)
    variables = module.init(key, x)
    kernel = variables["params"]["kernel"]
    spatial = len(shape) - 2
    k = opts["kernel_size"]
    k = (k,) * spatial if isinstance(k, int) else k
    cin = shape[-1] if layout.endswith("C") else shape[1]
    per_group = cin // opts.get("groups", 1)
    expected_shape = ((*k, per_group, opts["features"]) if layout.endswith("C")
                      else (opts["features"], per_group, *k))
    assert kernel.shape == expected_shape
    assert ("bias" in variables["params"]) == opts.get("use_bias", True)
    call = {n: opts[n] for n in ("stride", "padding", "dilation", "groups") if n in opts}
    exact(module.apply(variables, x), layers.conv(x, kernel, variables["params"].get("bias"), layout=layout, **call))


def test_dense_equals_layers(key, rng):
    x = _x(rng, (2, 3, 5))
    for use_bias in (True, False):
        module = jnn.Dense(7, use_bias=use_bias)
        params = module.init(key, x)["params"]
        assert params["kernel"].shape == (5, 7)
        exact(module.apply({"params": params}, x), layers.linear(x, params["kernel"], params.get("bias")))


@pytest.mark.parametrize("module,fn,shape", [
    (jnn.MaxPool(3, stride=2, padding=1, ceil_mode=True),
     lambda x: layers.max_pool(x, 3, stride=2, padding=1, ceil_mode=True), (2, 8, 8, 3)),
    (jnn.MaxPool(2, layout="NCHW"), lambda x: layers.max_pool(x, 2, layout="NCHW"), (2, 3, 6, 6)),
    (jnn.AvgPool(3, stride=2, padding=1, count_include_pad=False),
     lambda x: layers.avg_pool(x, 3, stride=2, padding=1, count_include_pad=False), (2, 7, 7, 3)),
    (jnn.AvgPool((2, 3), ceil_mode=True), lambda x: layers.avg_pool(x, (2, 3), ceil_mode=True), (2, 7, 7, 3)),
    (jnn.GlobalAvgPool(), layers.global_avg_pool, (2, 5, 4, 3)),
    (jnn.GlobalAvgPool(layout="NCHW", keepdims=True),
     lambda x: layers.global_avg_pool(x, layout="NCHW", keepdims=True), (2, 3, 5, 4)),
    (jnn.AdaptiveAvgPool((3, 2)), lambda x: layers.adaptive_avg_pool(x, (3, 2)), (2, 7, 5, 3)),
    (jnn.Flatten(), layers.flatten, (2, 4, 3, 5)),
    (jnn.Flatten(layout="NCHW"), lambda x: layers.flatten(x, layout="NCHW"), (2, 4, 3, 5)),
    (jnn.ReLU(), layers.relu, (3, 4)),
    (jnn.LeakyReLU(0.2), lambda x: layers.leaky_relu(x, negative_slope=0.2), (3, 4)),
    (jnn.ELU(0.5), lambda x: layers.elu(x, alpha=0.5), (3, 4)),
    (jnn.Sigmoid(), layers.sigmoid, (3, 4)),
    (jnn.Tanh(), layers.tanh, (3, 4)),
    (jnn.Maxout(2), lambda x: layers.maxout(x, 2), (3, 4)),
    (jnn.Maxout(3, layout="NCW"), lambda x: layers.maxout(x, 3, layout="NCW"), (2, 6, 4)),
    (jnn.LogSoftmax(), layers.log_softmax, (3, 4)),
    (jnn.LogSoftmax(axis=1), lambda x: layers.log_softmax(x, axis=1), (2, 5, 3)),
    (jnn.Activation("gelu"), layers.gelu, (3, 4)),
    (jnn.Activation("silu"), layers.silu, (3, 4)),
], ids=lambda v: type(v).__name__ if isinstance(v, flax_nn.Module) else "")
def test_parameter_free_modules_equal_layers(key, rng, module, fn, shape):
    x = _x(rng, shape)
    variables = module.init(key, x)
    assert not jax.tree.leaves(variables)
    exact(module.apply(variables, x), fn(x))


@pytest.mark.parametrize("module,fn,shape", [
    (jnn.LayerNorm(eps=1e-3), lambda x, p: layers.layer_norm(x, p, eps=1e-3), (2, 3, 6)),
    (jnn.GroupNorm(2), lambda x, p: layers.group_norm(x, p, groups=2), (2, 3, 3, 6)),
    (jnn.GroupNorm(3, layout="NCHW"), lambda x, p: layers.group_norm(x, p, groups=3, layout="NCHW"), (2, 6, 3, 3)),
    (jnn.InstanceNorm(), layers.instance_norm, (2, 3, 3, 6)),
    (jnn.InstanceNorm(layout="NCHW"), lambda x, p: layers.instance_norm(x, p, layout="NCHW"), (2, 6, 3, 3)),
], ids=lambda v: type(v).__name__ if isinstance(v, flax_nn.Module) else "")
def test_norm_modules_equal_layers(key, rng, module, fn, shape):
    x = _x(rng, shape)
    params = module.init(key, x)["params"]
    exact(params["scale"], np.ones(6, np.float32))
    exact(params["bias"], np.zeros(6, np.float32))
    params = {"scale": _x(rng, (6,)), "bias": _x(rng, (6,))}
    exact(module.apply({"params": params}, x), fn(x, params))


# ------------------------------------------------------------------------------------------------
# Sequential
# ------------------------------------------------------------------------------------------------

def test_sequential_passes_train(key, rng, monkeypatch):
    inner = jnn.Sequential([jnn.Dense(5), jnn.BatchNorm()])
    model = jnn.Sequential([jnn.Dense(5), jnn.BatchNorm(), layers.relu, jnn.Dropout(0.5), inner, jnn.Tanh()])
    x = _x(rng, (4, 3))
    variables = model.init(key, x, train=False)
    p, s = variables["params"], variables["batch_stats"]
    assert set(p) == {"layers_0", "layers_1", "layers_4"} and set(p["layers_4"]) == {"layers_0", "layers_1"}

    def manual(train, key):
        y = layers.linear(x, p["layers_0"]["kernel"], p["layers_0"]["bias"])
        y, s1 = layers.batch_norm(y, p["layers_1"], s["layers_1"], train=train)
        y = layers.dropout(key, layers.relu(y), 0.5, train=train)
        y = layers.linear(y, p["layers_4"]["layers_0"]["kernel"], p["layers_4"]["layers_0"]["bias"])
        y, s2 = layers.batch_norm(y, p["layers_4"]["layers_1"], s["layers_4"]["layers_1"], train=train)
        return layers.tanh(y), {"layers_1": s1, "layers_4": {"layers_1": s2}}

    y_eval = model.apply(variables, x, train=False)
    exact(y_eval, manual(False, None)[0])

    keys = _capture_dropout_keys(monkeypatch)
    y, upd = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    assert len(keys) == 1 and keys[0] is not None
    ref, ref_stats = manual(True, keys[0])
    exact(y, ref)
    jax.tree.map(exact, upd["batch_stats"], ref_stats)
    assert not np.allclose(y, y_eval)


def test_accepts_train():
    assert jnn.accepts_train(jnn.BatchNorm()) and jnn.accepts_train(jnn.Dropout(0.1))
    assert jnn.accepts_train(jnn.Sequential([jnn.ReLU()]))
    assert not jnn.accepts_train(jnn.Conv(3, 3)) and not jnn.accepts_train(jnn.ReLU())
    assert not jnn.accepts_train(layers.relu)
    assert jnn.accepts_train(layers.dropout)  # train is keyword-only there too


# ------------------------------------------------------------------------------------------------
# Default initialisation: PyTorch's
# ------------------------------------------------------------------------------------------------

def _check_uniform(values, bound):
    """U(-bound, bound): inside the bound, reaching it, variance bound^2 / 3.

    With n >= 4096 samples, P(max|v| < 0.99 bound) = 0.99^n < 1e-17; the sample variance has relative
    standard deviation sqrt(0.8 / n) < 1.4%, so a 7% tolerance is 5 standard deviations.
    """
    values = np.asarray(values, np.float64).ravel()
    assert values.size >= 4096
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() >= 0.99 * bound
    np.testing.assert_allclose(values.var(), bound ** 2 / 3, rtol=0.07)


@pytest.mark.parametrize("groups,layout", [(1, "NHWC"), (4, "NHWC"), (1, "NCHW")])
def test_default_conv_init_is_pytorchs(key, groups, layout):
    cin, cout, k = 16, 4096 // 9 // 4 * 4, 3  # enough biases for the bias check too
    x = jnp.zeros((1, 5, 5, cin) if layout == "NHWC" else (1, cin, 5, 5))
    params = jnn.Conv(cout, k, groups=groups, layout=layout).init(key, x)["params"]
    tconv = torch.nn.Conv2d(cin, cout, k, groups=groups)
    if layout == "NCHW":
        assert params["kernel"].shape == tuple(tconv.weight.shape)  # OIHW: torch's weight layout
    torch_bound = float(tconv.weight.detach().abs().max())
    bound = 1 / math.sqrt(cin // groups * k * k)
    assert 0.99 * bound <= torch_bound <= bound  # the same bound as torch's kaiming_uniform_(a=sqrt(5))
    _check_uniform(params["kernel"], bound)
    b = np.asarray(params["bias"])
    assert np.abs(b).max() <= bound and np.abs(tconv.bias.detach().numpy()).max() <= bound
    assert np.abs(b).max() >= 0.9 * bound  # 452 samples: P(max < 0.9 bound) = 0.9^452 < 1e-20


def test_default_dense_init_is_pytorchs(key):
    params = jnn.Dense(512).init(key, jnp.zeros((1, 64)))["params"]
    tlin = torch.nn.Linear(64, 512)
    assert params["kernel"].shape == tuple(tlin.weight.T.shape)
    bound = 1 / math.sqrt(64)
    assert 0.99 * bound <= float(tlin.weight.detach().abs().max()) <= bound
    _check_uniform(params["kernel"], bound)
    assert bound * 0.95 <= np.abs(np.asarray(params["bias"])).max() <= bound  # 512 samples: 0.95^512 < 1e-11


def test_custom_initializers_are_used(key):
    params = jnn.Conv(3, 2, kernel_init=jax.nn.initializers.ones, bias_init=jax.nn.initializers.zeros).init(
        key, jnp.zeros((1, 4, 4, 2)))["params"]
    exact(params["kernel"], np.ones((2, 2, 2, 3), np.float32))
    exact(params["bias"], np.zeros(3, np.float32))
    params = jnn.BatchNorm(scale_init=jax.nn.initializers.zeros).init(key, jnp.zeros((2, 3)), train=False)["params"]
    exact(params["scale"], np.zeros(3, np.float32))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module,x,call,error,match", [
    (jnn.Conv(0, 3), (1, 5, 5, 2), {}, ValueError, r"Conv: features must be an int >= 1, got 0"),
    (jnn.Conv(4, (3, 3, 3)), (1, 5, 5, 2), {}, ValueError, r"Conv: kernel_size must be an int or a tuple of 2 ints"),
    (jnn.Conv(4, 3, groups=2), (1, 5, 5, 3), {}, ValueError, r"Conv: groups=2 does not divide the 3 input channels"),
    (jnn.Conv(4, 3), (5, 2), {}, ValueError, r"Conv: expected a batched input of rank 3, 4 or 5.*got shape \(5, 2\)"),
    (jnn.Conv(4, 3, layout="HWNC"), (1, 5, 5, 2), {}, ValueError, r"Conv: unknown layout 'HWNC'"),
    (jnn.Dense(-1), (2, 3), {}, ValueError, r"Dense: features must be an int >= 1, got -1"),
    (jnn.Dense(4), (), {}, ValueError, r"Dense: expected an input of shape \[\.\.\., in\]"),
    (jnn.BatchNorm(), (5,), dict(train=False), ValueError, r"BatchNorm: expected a batched input of shape \[N, C\]"),
    (jnn.Dropout(1.0), (2, 3), dict(train=False), ValueError,
     r"dropout: rate \(the DROP probability\) must be in \[0, 1\)"),
    (jnn.Activation("swish"), (2, 3), {}, ValueError, r"get_activation: unknown nonlinearity 'swish'"),
    (jnn.Sequential([]), (2, 3), dict(train=False), ValueError, r"Sequential: layers must be a non-empty sequence"),
    (jnn.Sequential([jnn.ReLU(), 3]), (2, 3), dict(train=False), TypeError,
     r"Sequential: layers\[1\] must be a module or a function, got int"),
])
def test_errors(key, module, x, call, error, match):
    with pytest.raises(error, match=match):
        module.init(key, jnp.zeros(x), **call)


def test_maxout_axis_field_is_deprecated_and_still_works(key, rng):
    x = _x(rng, (2, 6, 4))
    module = jnn.Maxout(3, axis=1)
    with pytest.warns(DeprecationWarning, match=r"Maxout: the field axis is deprecated .* pass layout="):
        variables = module.init(key, x)
    with pytest.warns(DeprecationWarning):
        y = module.apply(variables, x)
    exact(y, layers.maxout(x, 3, layout="NCW"))


@pytest.mark.parametrize("axis", [-1, 1])
def test_log_softmax_module_matches_torch(key, rng, axis):
    x = _x(rng, (4, 5, 3))
    module = jnn.LogSoftmax(axis=axis)
    y = module.apply(module.init(key, x), x)
    np.testing.assert_allclose(y, torch.nn.LogSoftmax(dim=axis)(torch.tensor(np.asarray(x))).numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("module", [jnn.Conv(4, 3), jnn.Dense(4)], ids=["Conv", "Dense"])
@pytest.mark.parametrize("bad", ["abc", None], ids=["str", "None"])
def test_modules_reject_non_array_input(key, module, bad):
    name = type(module).__name__
    with pytest.raises(TypeError, match=rf"{name}: x must be an array"):
        module.init(key, bad)
