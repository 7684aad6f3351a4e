"""Every public layer function and every registered model composes with every JAX transformation.

One matrix: cases (each public function of `jaxnets.layers`, in its training and evaluation forms where they
differ; one model of each family and block type of `jaxnets.models.available()`, see `MODEL_NAMES` and
`BLOCK_MODELS`, on its smallest input) x transformations:

- "jit": `jax.jit(f)` equals `f` (eager).
- "grad_jvp": `jax.grad` and `jax.jvp` agree: `<u, J v>` (jvp) = `<J^T u, v>` (vjp/grad) for random u, v.
- "jacfwd": `jax.jacfwd` with respect to the first 4 entries of the input equals `jax.jacrev`.
- "hessian": layers: `jax.hessian` (forward over reverse) with respect to the first 4 entries of the input
  equals reverse over reverse; models: a Hessian-vector product by jvp-of-grad equals grad-of-grad
  (`grad(|grad L|^2 / 2) = H grad L`).
- "grad_of_grad": layers: the same grad-of-grad identity against jvp-of-grad.
- "vmap_x": `jax.vmap` over two stacked inputs equals a Python loop.
- "vmap_params": `jax.vmap` over two stacked parameter sets (an ensemble) equals a Python loop.

Batch norm in training mode runs its custom-JVP path and the convolutions on inputs smaller than the kernel
their explicit-padding custom JVP (cases "conv_small_input*", and VGG). Non-differentiable outputs
(`accuracy`) get "jit" and "vmap_x" only. Tolerances (float32): exact-math identities evaluated by different
programs agree to rtol 1e-4 (layers) / 2e-3 (models, deep float32 sums), both with atol scaled to the
largest entry.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets.nn as jnn
from jaxnets import layers, models
from jaxnets.models.googlenet import BasicConv2d, Inception, InceptionAux
from jaxnets.models.resnet import ResNet
from jaxnets.models.vgg import VGG

KEY = jax.random.key(0)


class Case(NamedTuple):
    fn: Callable  # fn(x, *params) -> array; every argument a pytree of float arrays
    args: tuple  # (x, *params)
    differentiable: bool = True


def _normal(i, shape, scale=1.0, shift=0.0):
    return shift + scale * jax.random.normal(jax.random.fold_in(KEY, i), shape)


def _norm_params(c, i=0):
    return {"scale": _normal(100 + i, (c,), 0.3, 1.0), "bias": _normal(200 + i, (c,), 0.3)}


X = _normal(1, (2, 4, 4, 3))  # [N, H, W, C]
LOGITS = _normal(2, (4, 5))
LABELS = jnp.array([0, 3, 1, 4])
BN_STATE = {"mean": _normal(3, (3,), 0.2), "var": _normal(4, (3,), 0.1, 1.0)}


def _bn_train(x, params):
    y, new = layers.batch_norm(x, params, BN_STATE, train=True, momentum=0.3)
    return jnp.concatenate([y.ravel(), new["mean"], new["var"]])


def _layer_cases() -> dict[str, Case]:
    small = _normal(5, (2, 2, 2, 4))  # smaller than the 3x3 kernel: conv's explicit-padding path
    cases = {
        "conv": Case(lambda x, k, b: layers.conv(x, k, b, stride=2, padding=1), (X, _normal(6, (3, 3, 3, 4), 0.3),
                                                                                _normal(7, (4,), 0.1))),
        "conv_small_input": Case(lambda x, k: layers.conv(x, k, padding=1), (small, _normal(8, (3, 3, 4, 3), 0.3))),
        "conv_small_input_grouped_strided": Case(lambda x, k: layers.conv(x, k, stride=2, padding=2, groups=2),
                                                 (small, _normal(9, (3, 3, 2, 4), 0.3))),
        "linear": Case(layers.linear, (LOGITS, _normal(10, (5, 3), 0.3), _normal(11, (3,), 0.1))),
        "max_pool": Case(lambda x: layers.max_pool(x, 2, stride=1, padding=1), (X,)),
        "avg_pool": Case(lambda x: layers.avg_pool(x, 3, stride=2, padding=1, count_include_pad=False), (X,)),
        "adaptive_avg_pool": Case(lambda x: layers.adaptive_avg_pool(x, (3, 3)), (X,)),
        "global_avg_pool": Case(layers.global_avg_pool, (X,)),
        "flatten": Case(layers.flatten, (X,)),
        "batch_norm_train": Case(_bn_train, (X, _norm_params(3))),
        "batch_norm_train_nchw": Case(lambda x, p: layers.batch_norm(x, p, BN_STATE, train=True, layout="NCHW")[0],
                                      (jnp.moveaxis(X, -1, 1), _norm_params(3))),
        "batch_norm_eval": Case(lambda x, p, s: layers.batch_norm(x, p, s, train=False)[0],
                                (X, _norm_params(3), BN_STATE)),
        "layer_norm": Case(lambda x, p: layers.layer_norm(x, p), (X, _norm_params(3))),
        "group_norm": Case(lambda x, p: layers.group_norm(x, p, groups=2), (_normal(12, (2, 3, 3, 4)), _norm_params(4))),
        "instance_norm": Case(lambda x, p: layers.instance_norm(x, p), (X, _norm_params(3))),
        "fold_batch_norm": Case(lambda k, b, p, s: jnp.concatenate([
            t.ravel() for t in layers.fold_batch_norm(k, b, p, s)]),
            (_normal(13, (3, 3, 2, 3), 0.3), _normal(14, (3,), 0.1), _norm_params(3), BN_STATE)),
        "dropout": Case(lambda x: layers.dropout(jax.random.key(1), x, 0.3, train=True), (X,)),
        "maxout": Case(lambda x: layers.maxout(x, 2), (_normal(15, (2, 3, 4)),)),
        "cross_entropy": Case(lambda z: layers.cross_entropy(z, LABELS, label_smoothing=0.1), (LOGITS,)),
        "cross_entropy_none": Case(lambda z: layers.cross_entropy(z, LABELS, reduction="none"), (LOGITS,)),
        "nll_loss": Case(lambda z: layers.nll_loss(jax.nn.log_softmax(z), LABELS), (LOGITS,)),
        "focal_loss": Case(lambda z: layers.focal_loss(z, LABELS), (LOGITS,)),
        "binary_cross_entropy_with_logits": Case(layers.binary_cross_entropy_with_logits,
                                                 (LOGITS, jax.nn.sigmoid(_normal(16, (4, 5))))),
        "kl_div": Case(lambda a, b: layers.kl_div(a, b, log_target=True, reduction="batchmean"),
                       (jax.nn.log_softmax(LOGITS), jax.nn.log_softmax(_normal(17, (4, 5))))),
        "mse_loss": Case(layers.mse_loss, (LOGITS, _normal(18, (4, 5)))),
        "l1_loss": Case(layers.l1_loss, (LOGITS, _normal(19, (4, 5)))),
        "smooth_l1_loss": Case(lambda a, b: layers.smooth_l1_loss(a, b, beta=3.0), (LOGITS, _normal(20, (4, 5)))),
        "margin_ranking_loss": Case(lambda a, b: layers.margin_ranking_loss(a, b, jnp.array([1.0, -1, 1, -1]),
                                                                            margin=0.1),
                                    (_normal(21, (4,)), _normal(22, (4,)))),
        "accuracy": Case(lambda z: layers.accuracy(z, LABELS, k=2), (LOGITS,), differentiable=False),
    }
    for name in ("relu", "sigmoid", "silu", "softplus", "tanh", "identity", "gelu", "elu", "leaky_relu"):
        cases[name] = Case(getattr(layers, name), (X,))
    return cases


LAYER_CASES = _layer_cases()


# ----------------------------------------------------------------------------------------------
# models: one per family and block type, on its smallest input, batch 2, training mode (batch statistics)
# ----------------------------------------------------------------------------------------------
FAST_MODELS = ("mlp", "lenet5")  # their cheap checks run in the fast loop; every other model check is @pytest.mark.slow
# One model per family and block type: the deeper members (resnet34-152, se_resnet34/50, vgg13-19) are built
# from exactly these blocks (BasicBlock, Bottleneck with groups, SE, the VGG stack), so the matrix covers
# every module code path; each deeper member's jit + grad step runs in tests/models/test_registry_basic.py.
# Every model's forward compiles once per check, so all 22 would cost tens of minutes of XLA compilation.
MODEL_NAMES = ("mlp", "lenet5", "alexnet", "nin")


class InceptionNet(flax_nn.Module):
    """GoogLeNet's modules at the smallest scale: a BasicConv2d stem, two Inception blocks (the second after
    a ceil-mode max pool, as in GoogLeNet), its auxiliary head and its main head (global pool, dropout, Dense);
    the logits are the main head's plus the auxiliary head's."""

    @flax_nn.compact
    def __call__(self, x, *, train, mask=None):
        x = BasicConv2d(8, 3, padding=1)(x, train=train, mask=mask)
        x = Inception(4, 4, 8, 2, 4, 4)(x, train=train, mask=mask)
        aux = InceptionAux(3)(x, train=train, mask=mask)
        x = jnn.MaxPool(3, stride=2, ceil_mode=True)(x)
        x = Inception(8, 4, 8, 2, 4, 4)(x, train=train, mask=mask)
        x = jnn.Dropout(0.2)(jnn.GlobalAvgPool()(x), train=train)
        return jnn.Dense(3)(x) + aux
# The BasicBlock (ResNet-18/34), Bottleneck (ResNet-50+), grouped Bottleneck (ResNeXt) and SE blocks in a
# two-stage ResNet (one block per stage; the second stage's block downsamples with a strided 1x1 shortcut),
# GoogLeNet's BasicConv2d/Inception/InceptionAux in a two-block net and VGG's stack at small widths: the same
# module code as resnet18-152 / resnext50_32x4d / se_resnet* / googlenet / vgg*, at a fraction of the compile
# time (GoogLeNet itself: about 5 CPU-minutes for the six checks). {name: (family, factory)}.
BLOCK_MODELS = {
    "resnet_basic": ("resnet", lambda: ResNet(stage_sizes=(1, 1), variant="cifar", num_classes=3)),
    "resnet_bottleneck": ("resnet", lambda: ResNet(stage_sizes=(1, 1), bottleneck=True, variant="cifar",
                                                   num_classes=3)),
    "resnext_bottleneck": ("resnext", lambda: ResNet(stage_sizes=(1, 1), bottleneck=True, groups=32,
                                                     width_per_group=4, variant="cifar", num_classes=3)),
    "se_resnet_basic": ("se_resnet", lambda: ResNet(stage_sizes=(1, 1), se_reduction=16, variant="cifar",
                                                    num_classes=3)),
    "googlenet_blocks": ("googlenet", InceptionNet),
    # VGG-11's stack (8 convs, 5 pools, BN) at 1/16 of its widths: vgg11_bn's code paths, a fraction of its cost.
    "vgg_stack": ("vgg", lambda: VGG(config=(4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"),
                                     batch_norm=True, variant="cifar", num_classes=3)),
}


@functools.cache
def _model_case(name: str) -> Case:
    variant = "mnist" if name in ("mlp", "lenet5") else "cifar"
    # The smallest input each model takes (the checks' cost grows with it): VGG's five pools need 32x32,
    # AlexNet's 16x16; the fully convolutional nets with global pooling run at 8x8.
    size = 28 if variant == "mnist" else {"vgg_stack": 32, "alexnet": 16}.get(name, 8)
    shape = (2, size, size, 1 if variant == "mnist" else 3)
    model = BLOCK_MODELS[name][1]() if name in BLOCK_MODELS else models.create(name, variant=variant, num_classes=3)
    x = _normal(30, shape)
    variables = model.init(jax.random.key(1), x, train=False)
    rest = {k: v for k, v in variables.items() if k != "params"}

    def fn(x, params):
        out = model.apply({"params": params, **rest}, x, train=True, mutable=list(rest) if rest else False,
                          rngs={"dropout": jax.random.key(2)})
        return out[0] if rest else out

    return Case(fn, (x, variables["params"]))


def _second_params(i, params):
    """Another parameter set: each leaf perturbed, for the ensemble (vmap over parameters)."""
    leaves, tree = jax.tree.flatten(params)
    return tree.unflatten([p * (1 + 0.1 * _normal(50 + i + j, p.shape)) for j, p in enumerate(leaves)])


# ----------------------------------------------------------------------------------------------
# the transformations and their checks
# ----------------------------------------------------------------------------------------------
def _close(a, b, rtol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(v), initial=0))))


def _tree_normal(i, tree):
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([_normal(i + j, jnp.shape(t)) for j, t in enumerate(leaves)])


def _vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _loss(case):
    """A scalar of every output: `sum(sin(f(args)) * w)` (sin: non-zero second derivatives everywhere)."""
    w = _normal(40, jax.eval_shape(case.fn, *case.args).shape)
    return lambda *args: jnp.sum(jnp.sin(case.fn(*args)) * w)


def _on_first_entries(f, x, k=4):
    """`g(v)`: f at x with its first k entries (flattened) replaced by v, and v0 = those entries."""
    flat = x.ravel()
    return (lambda v: f(jnp.concatenate([v, flat[k:]]).reshape(x.shape))), flat[:k]


# These checks are bound by XLA's compile time, not by compute: skip LLVM's expensive passes (as
# tests/models/test_registry_basic.py does). The identities checked hold whatever the optimisation level.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


def check_jit(case, rtol):
    _close(jax.jit(case.fn)(*case.args), case.fn(*case.args), rtol)


def check_grad_jvp(case, rtol):
    u = _normal(41, jax.eval_shape(case.fn, *case.args).shape)
    v = _tree_normal(60, case.args)
    _, jv = _jit(lambda a, t: jax.jvp(case.fn, a, t))(case.args, v)
    grads = _jit(jax.grad(lambda *a: jnp.vdot(u, case.fn(*a)), argnums=tuple(range(len(case.args)))))(*case.args)
    assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))
    _close(jnp.vdot(u, jv), _vdot(grads, v), rtol)


def check_jacfwd(case, rtol):
    x, *params = case.args
    g, v0 = _on_first_entries(lambda x_: case.fn(x_, *params).ravel(), x)
    _close(_jit(jax.jacfwd(g))(v0), _jit(jax.jacrev(g))(v0), rtol)


def check_hessian(case, rtol):
    x, *params = case.args
    g, v0 = _on_first_entries(lambda x_: _loss(case)(x_, *params), x)
    h = _jit(jax.hessian(g))(v0)
    assert h.shape == (4, 4)
    _close(h, _jit(jax.jacrev(jax.jacrev(g)))(v0), rtol)


def check_grad_of_grad(case, rtol):
    """grad(|grad L|^2 / 2) (reverse over reverse) = H grad L (jvp of grad: forward over reverse)."""
    loss = _loss(case)
    grad = jax.grad(lambda a: loss(*a))
    gg = _jit(jax.grad(lambda a: 0.5 * _vdot(grad(a), grad(a))))(case.args)
    hvp = _jit(lambda a: jax.jvp(grad, (a,), (grad(a),))[1])(case.args)
    _close(gg, hvp, rtol)


def check_vmap_x(case, rtol):
    x, *params = case.args
    xs = jnp.stack([x, x * 0.7 + 0.1])
    one = _jit(lambda x_: case.fn(x_, *params))  # the loop runs one compiled program
    _close(_jit(jax.vmap(lambda x_: case.fn(x_, *params)))(xs), jnp.stack([one(x_) for x_ in xs]), rtol)


def check_vmap_params(case, rtol):
    x, *params = case.args
    ensemble = [params, [_second_params(i, p) for i, p in enumerate(params)]]
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *ensemble)
    one = _jit(lambda p: case.fn(x, *p))
    _close(_jit(jax.vmap(lambda p: case.fn(x, *p)))(stacked), jnp.stack([one(p) for p in ensemble]), rtol)


CHECKS = {"jit": check_jit, "grad_jvp": check_grad_jvp, "jacfwd": check_jacfwd, "hessian": check_hessian,
          "grad_of_grad": check_grad_of_grad, "vmap_x": check_vmap_x, "vmap_params": check_vmap_params}
MODEL_CHECKS = ("jit", "grad_jvp", "jacfwd", "grad_of_grad", "vmap_x", "vmap_params")  # hessian: via hvp


def _matrix():
    for name, case in LAYER_CASES.items():
        for check in CHECKS:
            if (not case.differentiable and check not in ("jit", "vmap_x")) or (
                    check == "vmap_params" and len(case.args) == 1):
                continue
            yield pytest.param("layer", name, check, id=f"{name}-{check}")
    for name in MODEL_NAMES + tuple(BLOCK_MODELS):
        for check in MODEL_CHECKS:
            marks = () if name in FAST_MODELS and check in ("jit", "vmap_x", "vmap_params") else (pytest.mark.slow,)
            yield pytest.param("model", name, check, id=f"model_{name}-{check}", marks=marks)


def test_model_names_cover_every_family():
    import re

    def family(name):  # "resnext50_32x4d" -> "resnext", "se_resnet18" -> "se_resnet", "vgg11_bn" -> "vgg"
        return re.sub(r"\d.*$", "", name)

    assert set(MODEL_NAMES) <= set(models.available())
    covered = {family(n) for n in MODEL_NAMES} | {f for f, _ in BLOCK_MODELS.values()}
    assert {family(n) for n in models.available()} == covered


@pytest.mark.parametrize("kind,name,check", list(_matrix()))
def test_transformation(kind, name, check):
    case = LAYER_CASES[name] if kind == "layer" else _model_case(name)
    CHECKS[check](case, 1e-4 if kind == "layer" else 2e-3)
