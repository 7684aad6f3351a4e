"""Parity of jaxnets.layers.normalization with torch.nn.BatchNorm/LayerNorm/GroupNorm/InstanceNorm.

Inputs are generated channels-first (PyTorch's shape) and moved to channels-last for the default
layout. Unless a test says otherwise the tolerance is float32's rtol = atol = 1e-5.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from _tolerances import FLOAT32
from jaxnets.layers.normalization import (batch_norm, fold_batch_norm, group_norm, init_batch_norm,
                                          init_group_norm, init_instance_norm, init_layer_norm,
                                          instance_norm, layer_norm)

TOL = FLOAT32
CL = {2: "NHWC", 3: "NWC", 4: "NHWC", 5: "NDHWC"}   # channels-last layout name per rank of x
CF = {2: "NCHW", 3: "NCW", 4: "NCHW", 5: "NCDHW"}   # channels-first (PyTorch) layout name per rank
TORCH_BN = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
            5: torch.nn.BatchNorm3d}
TORCH_IN = {3: torch.nn.InstanceNorm1d, 4: torch.nn.InstanceNorm2d, 5: torch.nn.InstanceNorm3d}
SHAPES = {2: (6, 3), 3: (4, 3, 5), 4: (3, 3, 4, 5), 5: (2, 3, 3, 4, 2)}  # channels-first, C = 3


def to_layout(a, channels_last):
    """Channels-first numpy/torch-shaped array -> the layout under test."""
    a = np.asarray(a)
    return np.moveaxis(a, 1, -1) if channels_last and a.ndim > 2 else a


def from_layout(a, channels_last):
    a = np.asarray(a)
    return np.moveaxis(a, -1, 1) if channels_last and a.ndim > 2 else a


def t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


def random_affine(rng, shape):
    return {"scale": rng.normal(1.0, 0.5, shape).astype(np.float32),
            "bias": rng.normal(0.0, 0.5, shape).astype(np.float32)}


def random_state(rng, c):
    return {"mean": rng.normal(0.0, 1.0, c).astype(np.float32),
            "var": rng.uniform(0.5, 2.0, c).astype(np.float32)}


def torch_bn(rank, params, state, momentum=0.1, eps=1e-5):
    c = params["scale"].shape[0]
    bn = TORCH_BN[rank](c, eps=eps, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(t(params["scale"]))
        bn.bias.copy_(t(params["bias"]))
        bn.running_mean.copy_(t(state["mean"]))
        bn.running_var.copy_(t(state["var"]))
    return bn


# ---------------------------------------------------------------------------------------------
# batch norm
# ---------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("train", "layout", "momentum"))
def bn_value_and_grad(x, params, state, g, *, train, layout, momentum):
    """y, new_state and the gradient of sum(y * g) wrt (x, params): one compilation per case."""
    def loss(x_, params_):
        y, new = batch_norm(x_, params_, state, train=train, momentum=momentum, layout=layout)
        return jnp.sum(y * g), (y, new)
    (_, (y, new)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, params)
    return y, new, grads


@pytest.mark.parametrize("rank,channels_last,train", [
    (2, False, True), (3, True, True), (3, False, True), (4, True, True), (4, False, True), (5, True, True),
    (4, False, False), (5, False, False)])
def test_batch_norm_forward_and_grad_match_torch(rng, rank, channels_last, train):
    x = rng.normal(0.5, 2.0, SHAPES[rank]).astype(np.float32)
    g = rng.normal(size=SHAPES[rank]).astype(np.float32)   # upstream gradient
    params, state = random_affine(rng, 3), random_state(rng, 3)
    layout = CL[rank] if channels_last else CF[rank]
    y, new, (gx, gp) = bn_value_and_grad(to_layout(x, channels_last), params, state,
                                         to_layout(g, channels_last), train=train, layout=layout,
                                         momentum=0.2)

    bn = torch_bn(rank, params, state, momentum=0.2).train(train)
    xt = t(x, grad=True)
    yt = bn(xt)
    yt.backward(t(g))
    np.testing.assert_allclose(from_layout(y, channels_last), yt.detach().numpy(), **TOL)
    np.testing.assert_allclose(from_layout(gx, channels_last), xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["scale"], bn.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["bias"], bn.bias.grad.numpy(), **TOL)
    np.testing.assert_allclose(new["mean"], bn.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(new["var"], bn.running_var.numpy(), **TOL)
    if train:  # the running variance moved by the UNBIASED batch variance
        batch_var = x.swapaxes(0, 1).reshape(3, -1).var(axis=1, ddof=1)
        np.testing.assert_allclose(new["var"], 0.8 * state["var"] + 0.2 * batch_var, **TOL)


@pytest.mark.parametrize("rank,channels_last,momentum", [
    (4, True, 0.1), (4, False, 0.3), (2, False, 0.3), (3, True, 0.1), (5, False, 0.3)])
def test_batch_norm_training_steps_then_eval_match_torch(rng, rank, channels_last, momentum):
    """Four training steps on different batches, then evaluation: outputs and running stats equal torch's.

    Channels-last cases use the default layout "NHWC" whatever the rank: it means NWC for a 3-D x
    and NDHWC for a 5-D x (the rank comes from x), which torch parity confirms.
    """
    layout = "NHWC" if channels_last else CF[rank]
    params, state = init_batch_norm(3)
    params = random_affine(rng, 3)
    bn = torch_bn(rank, params, {k: np.asarray(v) for k, v in state.items()}, momentum=momentum)
    step_fn = jax.jit(lambda x_, s_: batch_norm(x_, params, s_, train=True, momentum=momentum, layout=layout))
    for step in range(4):
        x = rng.normal(step - 1.0, 1.0 + step, SHAPES[rank]).astype(np.float32)
        y, state = step_fn(to_layout(x, channels_last), state)
        with torch.no_grad():
            yt = bn.train()(t(x))
        np.testing.assert_allclose(from_layout(y, channels_last), yt.numpy(), **TOL)
        np.testing.assert_allclose(state["mean"], bn.running_mean.numpy(), **TOL)
        np.testing.assert_allclose(state["var"], bn.running_var.numpy(), **TOL)
    x = rng.normal(0.0, 3.0, SHAPES[rank]).astype(np.float32)

    def eval_fn(x_, state_):
        y_, same = batch_norm(x_, params, state_, train=False, layout=layout)
        assert same is state_   # checked at trace time: evaluation returns the very same state objects
        return y_

    y = jax.jit(eval_fn)(to_layout(x, channels_last), state)
    with torch.no_grad():
        yt = bn.eval()(t(x))
    np.testing.assert_allclose(from_layout(y, channels_last), yt.numpy(), **TOL)


def test_batch_norm_jit_equals_eager(rng):
    x = jnp.asarray(rng.normal(size=(4, 3, 3, 2)).astype(np.float32))
    params, state = random_affine(rng, 2), random_state(rng, 2)
    f = lambda x_, p, s: batch_norm(x_, p, s, train=True, momentum=0.3)
    y, new = f(x, params, state)
    y_jit, new_jit = jax.jit(f)(x, params, state)
    np.testing.assert_allclose(y_jit, y, **TOL)
    np.testing.assert_allclose(new_jit["var"], new["var"], **TOL)


def test_batch_norm_mask_equals_batch_norm_on_valid_rows(rng):
    """Padding rows (filled with large garbage) change neither the statistics nor the valid outputs."""
    x = rng.normal(1.0, 2.0, (6, 3, 3, 2)).astype(np.float32)       # NHWC
    mask = np.array([True, False, True, True, False, True])
    x[~mask] = rng.normal(500.0, 300.0, x[~mask].shape)              # garbage padding
    params, state = random_affine(rng, 2), random_state(rng, 2)

    def loss(x_, p, m):
        y, new = batch_norm(x_, p, state, train=True, momentum=0.3, mask=m)
        return jnp.sum(jnp.where(jnp.asarray(m, bool)[:, None, None, None], y, 0) ** 2), (y, new)

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, (y, new)), (gx, gp) = vg(x, params, mask)
    sub = x[mask]
    (_, (y_ref, new_ref)), (gx_ref, gp_ref) = vg(sub, params, np.ones(len(sub), bool))
    np.testing.assert_allclose(y[mask], y_ref, **TOL)
    for k in ("mean", "var"):
        np.testing.assert_allclose(new[k], new_ref[k], **TOL)
    np.testing.assert_allclose(gx[mask], gx_ref, **TOL)
    np.testing.assert_array_equal(gx[~mask], 0.0)   # the loss does not see padding rows
    np.testing.assert_allclose(gp["scale"], gp_ref["scale"], **TOL)

    # torch on the valid subset agrees too
    bn = torch_bn(4, params, state, momentum=0.3)
    with torch.no_grad():
        yt = bn.train()(t(np.moveaxis(sub, -1, 1)))
    np.testing.assert_allclose(y[mask], np.moveaxis(yt.numpy(), 1, -1), **TOL)
    np.testing.assert_allclose(new["var"], bn.running_var.numpy(), **TOL)

    # padding outputs are still computed, with the statistics of the valid rows
    m = sub.mean(axis=(0, 1, 2), dtype=np.float64)
    v = sub.var(axis=(0, 1, 2), dtype=np.float64)
    y_pad = (x[~mask] - m) / np.sqrt(v + 1e-5) * params["scale"] + params["bias"]
    np.testing.assert_allclose(y[~mask], y_pad, rtol=1e-5, atol=1e-3)  # atol: |y_pad| ~ 1e3

    # a 0/1 integer mask is the same as a bool mask
    y01, new01 = jax.jit(lambda x_, m: batch_norm(x_, params, state, train=True, momentum=0.3, mask=m))(
        x, mask.astype(np.int32))
    np.testing.assert_allclose(y01, y, **TOL)
    np.testing.assert_allclose(new01["var"], new["var"], **TOL)


_bn_train_masked = jax.jit(lambda x, p, s, m: batch_norm(x, p, s, train=True, mask=m))


@pytest.mark.parametrize("valid", [0, 1])
def test_batch_norm_fewer_than_two_valid_values_keeps_the_running_state(rng, valid):
    x = rng.normal(size=(4, 3)).astype(np.float32)
    mask = np.arange(4) < valid
    params, state = random_affine(rng, 3), random_state(rng, 3)
    y, new = _bn_train_masked(x, params, state, mask)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(new["mean"], state["mean"])
    np.testing.assert_array_equal(new["var"], state["var"])


@pytest.mark.parametrize("channels_last", [False])   # layouts are covered above; one compile here
def test_synced_batch_norm_over_ragged_shards_equals_single_device(rng, channels_last):
    """vmap with axis_name stands in for K devices; shards hold 4, 1 and 3 valid rows of 4.

    The global statistics must be psum(sum) / psum(count): a pmean of per-shard means would weight
    the single row of shard 1 like the four of shard 0 (checked to differ below, so this test can fail).
    """
    k, npad, c = 3, 4, 2
    valid = [4, 1, 3]
    layout = "NHWC" if channels_last else "NCHW"
    shape = (k, npad, 3, 2, c) if channels_last else (k, npad, c, 3, 2)
    xs = rng.normal(0.0, 1.0, shape).astype(np.float32)
    xs += np.arange(k, dtype=np.float32).reshape(k, 1, 1, 1, 1) * 3.0   # shards differ in mean
    masks = np.arange(npad)[None, :] < np.array(valid)[:, None]         # [K, Npad]
    xs[~masks] = 1e3                                                    # padding garbage
    g = rng.normal(size=shape).astype(np.float32)
    params, state = random_affine(rng, c), random_state(rng, c)

    def sharded_loss(xs_, p):
        f = lambda x_, m: batch_norm(x_, p, state, train=True, momentum=0.3, axis_name="batch",
                                     mask=m, layout=layout)
        y, new = jax.vmap(f, axis_name="batch")(xs_, masks)
        return jnp.sum(jnp.where(masks[:, :, None, None, None], y * g, 0)), (y, new)

    def single_loss(x_, p):
        y, new = batch_norm(x_, p, state, train=True, momentum=0.3, layout=layout)
        return jnp.sum(y * g[masks]), (y, new)

    (_, (y, new)), (gx, gp) = jax.jit(jax.value_and_grad(sharded_loss, argnums=(0, 1), has_aux=True))(
        xs, params)
    (_, (y1, new1)), (gx1, gp1) = jax.jit(jax.value_and_grad(single_loss, argnums=(0, 1), has_aux=True))(
        xs[masks], params)
    np.testing.assert_allclose(y[masks], y1, **TOL)
    for shard in range(k):
        for name in ("mean", "var"):
            np.testing.assert_allclose(new[name][shard], new1[name], **TOL)
    np.testing.assert_allclose(gx[masks], gx1, **TOL)
    np.testing.assert_allclose(gp["scale"], gp1["scale"], **TOL)
    np.testing.assert_allclose(gp["bias"], gp1["bias"], **TOL)

    # The setup discriminates: averaging per-shard means gives a different mean.
    flat = lambda a: (a if channels_last else np.moveaxis(a, 1, -1)).reshape(-1, c)   # [values, C]
    per_shard = [flat(xs[i][masks[i]]).mean(0) for i in range(k)]
    global_mean = flat(xs[masks]).mean(0)
    assert np.abs(np.mean(per_shard, axis=0) - global_mean).max() > 0.1
    np.testing.assert_allclose(new1["mean"], 0.7 * state["mean"] + 0.3 * global_mean, **TOL)


def test_batch_norm_variance_is_stable_for_a_large_mean(rng):
    """|mean| / std = 1e5: E[x^2] - E[x]^2 in float32 would lose every digit; two-pass keeps ~3.

    rtol 1e-3: the float32 inputs themselves are only resolved to 1e4 * 6e-8 = 6e-4 of the std 1.
    """
    x = (1e4 + rng.normal(0.0, 0.1, (256, 2))).astype(np.float32)
    params, state = init_batch_norm(2)
    _, new = jax.jit(lambda x_: batch_norm(x_, params, state, train=True, momentum=1.0))(x)
    np.testing.assert_allclose(new["var"], x.astype(np.float64).var(axis=0, ddof=1), rtol=1e-3)


def test_batch_norm_bf16_input_keeps_float32_statistics(rng):
    """bf16 x: output bf16, state float32, statistics equal those of the float32 copy of x."""
    x = jnp.asarray(rng.normal(3.0, 1.0, (512, 4)), jnp.bfloat16)
    params, state = init_batch_norm(4)
    f = jax.jit(lambda x_: batch_norm(x_, params, state, train=True))
    y, new = f(x)
    y32, new32 = f(x.astype(jnp.float32))
    assert y.dtype == jnp.bfloat16 and new["mean"].dtype == jnp.float32
    np.testing.assert_array_equal(new["mean"], new32["mean"])
    np.testing.assert_array_equal(new["var"], new32["var"])
    np.testing.assert_array_equal(y, y32.astype(jnp.bfloat16))


def test_init_batch_norm():
    params, state = init_batch_norm(5, jnp.bfloat16)
    assert params["scale"].dtype == jnp.bfloat16 and params["scale"].shape == (5,)
    np.testing.assert_array_equal(params["scale"], 1)
    np.testing.assert_array_equal(params["bias"], 0)
    np.testing.assert_array_equal(state["mean"], 0)
    np.testing.assert_array_equal(state["var"], 1)


# ---------------------------------------------------------------------------------------------
# fold_batch_norm
# ---------------------------------------------------------------------------------------------

def _conv(x, k, b, *, dims, groups=1):
    y = jax.lax.conv_general_dilated(x, k, (1,) * (x.ndim - 2), "SAME", dimension_numbers=dims,
                                     feature_group_count=groups,
                                     precision=jax.lax.Precision.HIGHEST)
    channel_axis = y.ndim - 1 if dims[0].endswith("C") else 1
    return y if b is None else y + b.reshape([-1 if a == channel_axis else 1 for a in range(y.ndim)])


@pytest.mark.parametrize("spatial,channels_last,groups,with_bias", [
    (2, True, 1, True), (2, False, 1, True), (1, True, 2, False), (1, False, 1, False), (3, False, 2, True)])
def test_fold_batch_norm_conv_equals_conv_then_eval_bn(rng, spatial, channels_last, groups, with_bias):
    cin, cout = 4, 6
    sp = (5, 4, 3)[:spatial]
    win = (3, 2, 3)[:spatial]
    if channels_last:
        dims = (CL[spatial + 2], "DHWIO"[3 - spatial:], CL[spatial + 2])
        x = rng.normal(size=(2, *sp, cin))
        k = rng.normal(size=(*win, cin // groups, cout))
    else:
        dims = (CF[spatial + 2], "OIDHW"[:2] + "DHW"[3 - spatial:], CF[spatial + 2])
        x = rng.normal(size=(2, cin, *sp))
        k = rng.normal(size=(cout, cin // groups, *win))
    x, k = x.astype(np.float32), (k * 0.3).astype(np.float32)
    b = rng.normal(size=cout).astype(np.float32) if with_bias else None
    bn_params, bn_state = random_affine(rng, cout), random_state(rng, cout)
    layout = dims[1]


    @jax.jit
    def conv_bn_and_folded_conv(x_, k_, b_, bn_params_, bn_state_):
        y_ref, _ = batch_norm(_conv(x_, k_, b_, dims=dims, groups=groups), bn_params_, bn_state_,
                              train=False, layout=dims[0])
        k2_, b2_ = fold_batch_norm(k_, b_, bn_params_, bn_state_, kernel_layout=layout)
        return y_ref, _conv(x_, k2_, b2_, dims=dims, groups=groups), k2_, b2_

    y_ref, y_folded, k2, b2 = conv_bn_and_folded_conv(x, k, b, bn_params, bn_state)
    np.testing.assert_allclose(y_folded, y_ref, **TOL)
    assert k2.dtype == k.dtype and k2.shape == k.shape and b2.shape == (cout,)

    if not channels_last and spatial == 2:   # and the same numbers as torch's own fusion
        from torch.nn.utils.fusion import fuse_conv_bn_weights
        kt, bt = fuse_conv_bn_weights(t(k), None if b is None else t(b), t(bn_state["mean"]),
                                      t(bn_state["var"]), 1e-5, t(bn_params["scale"]),
                                      t(bn_params["bias"]))
        np.testing.assert_allclose(k2, kt.detach().numpy(), **TOL)
        np.testing.assert_allclose(b2, bt.detach().numpy(), **TOL)


@pytest.mark.parametrize("layout", ["IO", "OI"])
def test_fold_batch_norm_dense(rng, layout):
    x = rng.normal(size=(5, 4)).astype(np.float32)
    w = rng.normal(size=(4, 3)).astype(np.float32)          # [in, out]
    b = rng.normal(size=3).astype(np.float32)
    bn_params, bn_state = random_affine(rng, 3), random_state(rng, 3)
    kernel = w if layout == "IO" else w.T                   # "OI" is torch.nn.Linear.weight

    @jax.jit
    def dense_bn_and_folded_dense(x_, k_, b_, bn_params_, bn_state_):
        dense = lambda k, b: x_ @ (k if layout == "IO" else k.T) + b
        y_ref, _ = batch_norm(dense(k_, b_), bn_params_, bn_state_, train=False)
        return y_ref, dense(*fold_batch_norm(k_, b_, bn_params_, bn_state_, eps=1e-5, kernel_layout=layout))

    y_ref, y_folded = dense_bn_and_folded_dense(x, kernel, b, bn_params, bn_state)
    np.testing.assert_allclose(y_folded, y_ref, **TOL)


# ---------------------------------------------------------------------------------------------
# layer, group and instance norm
# ---------------------------------------------------------------------------------------------

def y_and_vjp(f, x, params, g):
    """f(x, params) and the vjp of the cotangent g wrt (x, params), in one compiled call."""
    def both(x_, p_, g_):
        y, vjp = jax.vjp(f, x_, p_)
        return y, vjp(g_)
    return jax.jit(both)(x, params, g)


@pytest.mark.parametrize("normalized_shape", [(5,), (3, 4, 5)])
def test_layer_norm_forward_and_grad_match_torch(rng, normalized_shape):
    x = rng.normal(0.5, 2.0, (2, 3, 4, 5)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    params = random_affine(rng, normalized_shape)
    y, (gx, gp) = y_and_vjp(lambda x_, p: layer_norm(x_, p, eps=1e-5), x, params, g)

    ln = torch.nn.LayerNorm(normalized_shape, eps=1e-5)
    with torch.no_grad():
        ln.weight.copy_(t(params["scale"]))
        ln.bias.copy_(t(params["bias"]))
    xt = t(x, grad=True)
    yt = ln(xt)
    yt.backward(t(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["scale"], ln.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["bias"], ln.bias.grad.numpy(), **TOL)


def test_init_layer_norm():
    p = init_layer_norm((2, 3))
    assert p["scale"].shape == (2, 3) and p["bias"].shape == (2, 3)
    np.testing.assert_array_equal(p["scale"], 1)
    np.testing.assert_array_equal(p["bias"], 0)
    assert init_layer_norm(4)["scale"].shape == (4,)
    for init in (init_group_norm, init_instance_norm):
        p = init(6, jnp.float16)
        assert p["scale"].dtype == jnp.float16 and p["scale"].shape == (6,)
        np.testing.assert_array_equal(p["scale"], 1)
        np.testing.assert_array_equal(p["bias"], 0)


@pytest.mark.parametrize("rank,groups,channels_last", [
    (4, 1, True), (4, 3, False), (4, 6, True), (2, 3, False), (3, 2, True), (5, 2, False)])
def test_group_norm_forward_and_grad_match_torch(rng, rank, groups, channels_last):
    shape = {2: (3, 6), 3: (2, 6, 5), 4: (2, 6, 4, 3), 5: (2, 6, 3, 2, 3)}[rank]
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    params = random_affine(rng, 6)
    layout = CL[rank] if channels_last else CF[rank]
    y, (gx, gp) = y_and_vjp(lambda x_, p: group_norm(x_, p, groups=groups, layout=layout),
                            to_layout(x, channels_last), params, to_layout(g, channels_last))

    gn = torch.nn.GroupNorm(groups, 6, eps=1e-5)
    with torch.no_grad():
        gn.weight.copy_(t(params["scale"]))
        gn.bias.copy_(t(params["bias"]))
    xt = t(x, grad=True)
    yt = gn(xt)
    yt.backward(t(g))
    np.testing.assert_allclose(from_layout(y, channels_last), yt.detach().numpy(), **TOL)
    np.testing.assert_allclose(from_layout(gx, channels_last), xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["scale"], gn.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["bias"], gn.bias.grad.numpy(), **TOL)


@pytest.mark.parametrize("rank,channels_last", [(3, True), (4, False), (4, True), (5, False)])
def test_instance_norm_forward_and_grad_match_torch(rng, rank, channels_last):
    shape = {3: (2, 3, 7), 4: (2, 3, 4, 5), 5: (2, 3, 3, 4, 2)}[rank]
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    params = random_affine(rng, 3)
    layout = CL[rank] if channels_last else CF[rank]
    y, (gx, gp) = y_and_vjp(lambda x_, p: instance_norm(x_, p, layout=layout),
                            to_layout(x, channels_last), params, to_layout(g, channels_last))

    inorm = TORCH_IN[rank](3, eps=1e-5, affine=True, track_running_stats=False)
    with torch.no_grad():
        inorm.weight.copy_(t(params["scale"]))
        inorm.bias.copy_(t(params["bias"]))
    xt = t(x, grad=True)
    yt = inorm(xt)
    yt.backward(t(g))
    np.testing.assert_allclose(from_layout(y, channels_last), yt.detach().numpy(), **TOL)
    np.testing.assert_allclose(from_layout(gx, channels_last), xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["scale"], inorm.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(gp["bias"], inorm.bias.grad.numpy(), **TOL)


def test_per_example_norms_work_under_vmap(rng):
    """vmap over a leading axis equals the batched call (each example is normalised on its own)."""
    x = jnp.asarray(rng.normal(size=(3, 2, 4, 4, 6)).astype(np.float32))
    p = random_affine(rng, 6)

    @jax.jit
    def vmapped_and_batched(x_):
        flat = x_.reshape(6, 4, 4, 6)
        return (jax.vmap(lambda e: group_norm(e, p, groups=3))(x_),
                group_norm(flat, p, groups=3).reshape(x_.shape),
                jax.vmap(lambda e: instance_norm(e, p))(x_), instance_norm(flat, p).reshape(x_.shape))

    g_vmap, g_ref, i_vmap, i_ref = vmapped_and_batched(x)
    np.testing.assert_allclose(g_vmap, g_ref, **TOL)
    np.testing.assert_allclose(i_vmap, i_ref, **TOL)


# ---------------------------------------------------------------------------------------------
# bad input: one test each
# ---------------------------------------------------------------------------------------------

def _bn_args(c=3, shape=(4, 5, 5, 3)):
    params, state = init_batch_norm(c)
    return np.ones(shape, np.float32), params, state


def test_batch_norm_rejects_channel_mismatch():
    x, params, state = _bn_args(c=4)
    with pytest.raises(ValueError, match=r"batch_norm: params\['scale'\] has shape \(4,\) but x of shape "
                                         r"\(4, 5, 5, 3\) has C = \(3,\).*layout='NCHW'"):
        batch_norm(x, params, state, train=True)


def test_batch_norm_rejects_state_channel_mismatch():
    x, params, _ = _bn_args()
    _, state = init_batch_norm(2)
    with pytest.raises(ValueError, match=r"batch_norm: state\['mean'\] has shape \(2,\)"):
        batch_norm(x, params, state, train=False)


def test_batch_norm_rejects_missing_param_keys():
    x, params, state = _bn_args()
    with pytest.raises(ValueError, match=r"batch_norm: params must be a dict with keys \['scale', 'bias'\]"):
        batch_norm(x, {"scale": params["scale"]}, state, train=True)


@pytest.mark.parametrize("train", [1, None, "yes", jnp.array(True)])
def test_batch_norm_rejects_non_bool_train(train):
    x, params, state = _bn_args()
    with pytest.raises(TypeError, match="batch_norm: train must be a Python bool"):
        batch_norm(x, params, state, train=train)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_batch_norm_rejects_momentum_outside_unit_interval(momentum):
    x, params, state = _bn_args()
    with pytest.raises(ValueError, match=r"batch_norm: momentum must be a finite real number in \[0.0, 1.0\]"):
        batch_norm(x, params, state, train=True, momentum=momentum)


def test_batch_norm_rejects_momentum_none():
    x, params, state = _bn_args()
    with pytest.raises(TypeError, match=r"batch_norm: momentum must be a real number in \[0, 1\] \(the weight of the new "
                                        r"batch\), got None: PyTorch's cumulative average"):
        batch_norm(x, params, state, train=True, momentum=None)


def test_batch_norm_rejects_negative_eps():
    x, params, state = _bn_args()
    with pytest.raises(ValueError, match="batch_norm: eps must be a finite real number >= 0.0, got -1e-05"):
        batch_norm(x, params, state, train=True, eps=-1e-5)


@pytest.mark.parametrize("shape", [(1, 3), (1, 1, 1, 3), (1, 3, 1)])
def test_batch_norm_rejects_one_value_per_channel_in_training(shape):
    x, params, state = _bn_args(shape=shape)
    layout = "NCW" if len(shape) == 3 else "NHWC"
    with pytest.raises(ValueError, match="batch_norm: expected more than 1 value per channel when training"):
        batch_norm(x, params, state, train=True, layout=layout)
    jax.eval_shape(lambda x_: batch_norm(x_, params, state, train=False, layout=layout), x)  # eval is fine


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2, 2, 2, 3)])
def test_batch_norm_rejects_wrong_rank(shape):
    x, params, state = _bn_args(shape=shape)
    with pytest.raises(ValueError, match=r"batch_norm: expected x of shape \[N, C\], \[N, \*spatial, C\]"):
        batch_norm(x, params, state, train=True)


def test_batch_norm_rejects_unknown_layout():
    x, params, state = _bn_args()
    with pytest.raises(ValueError, match="batch_norm: unknown layout 'NHCW'"):
        batch_norm(x, params, state, train=True, layout="NHCW")


def test_batch_norm_rejects_mask_of_wrong_shape():
    x, params, state = _bn_args()
    with pytest.raises(ValueError, match=r"batch_norm: mask must have shape \[N\] = \(4,\)"):
        batch_norm(x, params, state, train=True, mask=np.ones((4, 1), bool))


def test_batch_norm_rejects_integer_input():
    _, params, state = _bn_args()
    with pytest.raises(TypeError, match="batch_norm: x must be a floating-point array, got dtype int32"):
        batch_norm(np.ones((4, 3), np.int32), params, state, train=True)


def test_init_batch_norm_rejects_non_positive_features():
    with pytest.raises(ValueError, match="init_batch_norm: num_features must be an int >= 1, got 0"):
        init_batch_norm(0)


def test_init_layer_norm_rejects_float_shape():
    with pytest.raises(TypeError, match="init_layer_norm: normalized_shape must be an int >= 1, "
                                        "got float 4.0"):
        init_layer_norm((2, 4.0))


def test_fold_batch_norm_rejects_out_channel_mismatch():
    bn_params, bn_state = init_batch_norm(5)
    with pytest.raises(ValueError, match=r"fold_batch_norm: bn_params\['scale'\] has shape \(5,\) but kernel "
                                         r"of shape \(3, 3, 2, 4\) \(kernel_layout='HWIO'\) has O = \(4,\)"):
        fold_batch_norm(np.ones((3, 3, 2, 4)), None, bn_params, bn_state)


def test_fold_batch_norm_rejects_bias_mismatch():
    bn_params, bn_state = init_batch_norm(4)
    with pytest.raises(ValueError, match=r"fold_batch_norm: bias has shape \(3,\) but kernel"):
        fold_batch_norm(np.ones((4, 2, 3, 3)), np.ones(3), bn_params, bn_state, kernel_layout="OIHW")


def test_fold_batch_norm_rejects_unknown_layout():
    bn_params, bn_state = init_batch_norm(4)
    with pytest.raises(ValueError, match="fold_batch_norm: unknown kernel_layout 'NHWC'"):
        fold_batch_norm(np.ones((3, 3, 2, 4)), None, bn_params, bn_state, kernel_layout="NHWC")


def test_fold_batch_norm_rejects_rank_one_kernel():
    bn_params, bn_state = init_batch_norm(4)
    with pytest.raises(ValueError, match=r"fold_batch_norm: kernel must have rank >= 2"):
        fold_batch_norm(np.ones(4), None, bn_params, bn_state, kernel_layout="IO")


def test_layer_norm_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"layer_norm: x of shape \(2, 3, 4\) must end with the normalized "
                                         r"shape \(3,\)"):
        layer_norm(np.ones((2, 3, 4)), init_layer_norm(3))


def test_layer_norm_rejects_bias_shape_mismatch():
    params = {"scale": np.ones(4), "bias": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"layer_norm: params\['bias'\] has shape \(3,\)"):
        layer_norm(np.ones((2, 4)), params)


def test_group_norm_rejects_groups_not_dividing_channels():
    with pytest.raises(ValueError, match="group_norm: groups=4 must divide the number of channels C=6"):
        group_norm(np.ones((2, 3, 3, 6)), init_group_norm(6), groups=4)


def test_group_norm_rejects_non_int_groups():
    with pytest.raises(TypeError, match="group_norm: groups must be an int >= 1, got float 2.0"):
        group_norm(np.ones((2, 3, 3, 6)), init_group_norm(6), groups=2.0)


def test_group_norm_rejects_non_positive_groups():
    with pytest.raises(ValueError, match="group_norm: groups must be an int >= 1, got 0"):
        group_norm(np.ones((2, 3, 3, 6)), init_group_norm(6), groups=0)


def test_group_norm_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"group_norm: params\['scale'\] has shape \(6,\) but x of shape "
                                         r"\(2, 6, 3, 3\) has C = \(3,\)"):
        group_norm(np.ones((2, 6, 3, 3)), init_group_norm(6), groups=3)


def test_group_norm_rejects_unknown_layout():
    with pytest.raises(ValueError, match="group_norm: unknown layout 'CHWN'"):
        group_norm(np.ones((2, 3, 3, 6)), init_group_norm(6), groups=3, layout="CHWN")


def test_group_norm_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"group_norm: expected x of shape \[N, C\], \[N, C, \*spatial\]"):
        group_norm(np.ones(6), init_group_norm(6), groups=3, layout="NCHW")


def test_instance_norm_rejects_input_without_spatial_dims():
    with pytest.raises(ValueError, match=r"instance_norm: expected x of shape \[N, \*spatial, C\] with 1 "
                                         r"to 3 spatial dims \(layout='NHWC'\), got shape \(4, 3\)"):
        instance_norm(np.ones((4, 3)), init_instance_norm(3))


def test_instance_norm_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"instance_norm: params\['scale'\] has shape \(3,\) but x"):
        instance_norm(np.ones((2, 3, 4, 5)), init_instance_norm(3))


def test_instance_norm_rejects_unknown_layout():
    with pytest.raises(ValueError, match="instance_norm: unknown layout 'NHW'"):
        instance_norm(np.ones((2, 4, 5, 3)), init_instance_norm(3), layout="NHW")


def test_fold_batch_norm_layout_keyword_is_deprecated(rng):
    kernel = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    bn_params, bn_state = random_affine(rng, 4), random_state(rng, 4)
    with pytest.warns(DeprecationWarning, match=r"fold_batch_norm: the keyword layout= is deprecated .* "
                                                r"kernel_layout='OIHW'"):
        old = fold_batch_norm(kernel, None, bn_params, bn_state, layout="OIHW")
    new = fold_batch_norm(kernel, None, bn_params, bn_state, kernel_layout="OIHW")
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)


def test_fold_batch_norm_non_string_kernel_layout_raises_type_error(rng):
    with pytest.raises(TypeError, match="fold_batch_norm: kernel_layout must be a string"):
        fold_batch_norm(np.ones((3, 4), np.float32), None, random_affine(rng, 4), random_state(rng, 4),
                        kernel_layout=None)


@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}], ids=["str", "None", "dict"])
def test_norms_reject_non_array_input(bad):
    params, state = init_batch_norm(3)
    with pytest.raises(TypeError, match="batch_norm: x must be an array"):
        batch_norm(bad, params, state, train=True)
    with pytest.raises(TypeError, match="layer_norm: x must be an array"):
        layer_norm(bad, init_layer_norm(3))
    with pytest.raises(TypeError, match="group_norm: x must be an array"):
        group_norm(bad, init_group_norm(3), groups=1)
    with pytest.raises(TypeError, match="instance_norm: x must be an array"):
        instance_norm(bad, init_instance_norm(3))


@pytest.mark.parametrize("bad", [1, True, None, ("a",)])
def test_non_string_layouts_raise_type_error(bad):
    x = jnp.ones((2, 3, 3, 4))
    params, state = init_batch_norm(4)
    with pytest.raises(TypeError, match="batch_norm: layout must be a string"):
        batch_norm(x, params, state, train=False, layout=bad)
    with pytest.raises(TypeError, match="group_norm: layout must be a string"):
        group_norm(x, init_group_norm(4), groups=2, layout=bad)
    with pytest.raises(TypeError, match="instance_norm: layout must be a string"):
        instance_norm(x, init_instance_norm(4), layout=bad)


def test_init_layer_norm_rejects_non_sequence_and_empty_shape():
    with pytest.raises(TypeError, match="init_layer_norm: normalized_shape must be a positive int or a non-empty "
                                        "tuple of them, got float 4.0"):
        init_layer_norm(4.0)
    with pytest.raises(ValueError, match=r"init_layer_norm: normalized_shape must be .* got \(\)"):
        init_layer_norm(())
