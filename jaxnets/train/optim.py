"""Optimizers with torch.optim's defaults and update rules, built as chains of Optax transforms.

One public function per optimizer, optax-style, with explicit keyword options and torch's defaults:
`sgd`, `rmsprop`, `adam`, `adamw`, `amsgrad`, `adagrad`, `adadelta`, `adamax`, `nadam`,
`radam`. Each returns one `optax.GradientTransformation`:

    clip (clip_value, then clip_norm) -> coupled weight decay -> the optimizer's own rule
    [-> decoupled weight decay] -> -lr

wrapped, when `trainable=` is given, in `optax.multi_transform` so that frozen parameters get a
`-0.0` update and no optimizer state. Torch users clip the gradient before `opt.step()` and torch adds
`weight_decay * p` to the gradient inside `step`, so this order is torch's order. `optimizer(name,
learning_rate=..., **options)` is a thin lookup for the CLI and configs; it rejects an unknown option at once.

Every numeric option (the learning rate, momentum, betas, eps, weight decay, ...) may be a jax array,
traced too: build the optimizer inside `jax.vmap` over a population axis of learning rates and each
member follows its own rate; a Python number keeps the single-run numerics. Values of a traced array
cannot be range-checked.

Predicates (`trainable=`, `weight_decay_mask=`) are called on every parameter leaf as
`predicate(path, param) -> bool`, where `path` is the tuple of names leading to the leaf (see
`path_names`), e.g. `("ResBlock_0", "BatchNorm_0", "scale")` for a Flax `params` collection
(Flax names submodules `ClassName_index`; the path starts with `"params"` if the whole variables
dict is optimized), and `param` the array (or, while updating, the update of the same shape and
dtype). They run in Python at `init` and each time `update` is traced, so they must decide from
names, shapes and dtypes and return a Python `bool`, never a traced value.
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.checks import check_bool, check_real, check_real_or_array

__all__ = ["optimizer", "OPTIMIZERS", "sgd", "rmsprop", "adam", "adamw", "amsgrad", "adagrad", "adadelta",
           "adamax", "nadam", "radam", "path_names", "no_bias_no_norm", "scale_by_torch_amsgrad",
           "ScaleByTorchAmsgradState", "trace_with_dampening", "TraceWithDampeningState", "scale_by_torch_adagrad",
           "ScaleByTorchAdagradState", "scale_by_torch_nadam", "ScaleByTorchNadamState", "scale_by_torch_radam",
           "ScaleByTorchRadamState"]

Predicate = Callable[[tuple[str, ...], jax.Array], bool]
Hyper = float | jax.Array  # a hyperparameter: a Python number, or an array (possibly traced under jax.vmap)


# ----------------------------------------------------------------------------------------------
# parameter paths and the predicates on them
# ----------------------------------------------------------------------------------------------
def path_names(path) -> tuple[str, ...]:
    """Turn a JAX key path (from `jax.tree_util.tree_map_with_path`) into a tuple of names.

    Dict keys, attribute names and sequence indices all become strings:
    `(DictKey('Conv_0'), DictKey('kernel')) -> ('Conv_0', 'kernel')`;
    `(SequenceKey(2), GetAttrKey('w')) -> ('2', 'w')`.
    """
    names = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            names.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            names.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            names.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            names.append(str(k.key))
        else:
            names.append(str(k))
    return tuple(names)


# An enclosing module is a normalisation layer if its name contains "norm" (BatchNorm_0, LayerNorm,
# GroupNorm_3, norm1, RMSNorm, ...) or has the token "bn" (bn, bn1, BN_0, conv1_bn, bn_2; not "subnet").
_NORM_MODULE = re.compile(r"norm|(?:^|_)bn\d*(?:_|$)", re.IGNORECASE)


def no_bias_no_norm(path: tuple[str, ...], param) -> bool:
    """Weight-decay predicate of the preset `weight_decay_mask="no_bias_no_norm"`: True = decay.

    A leaf is NOT decayed when any of these holds:
    - it has `ndim <= 1` (every bias, every normalisation scale/offset, but also scalars and 1-D
      weights such as PReLU slopes or a learned temperature);
    - its own name is `"bias"` or `"scale"` (exact match);
    - a module on its path (any name but the last) contains `"norm"` (case-insensitive: BatchNorm_0,
      LayerNorm_1, GroupNorm_0, norm1) or has the token `"bn"`: `bn`, `BN_0`, `bn1`,
      `conv_bn2` (regex `(^|_)bn\\d*(_|$)`, case-insensitive), so `subnet` is not a norm layer.
    Everything else (convolution and dense kernels, embeddings) is decayed.
    """
    if jnp.ndim(param) <= 1 or path[-1] in ("bias", "scale"):
        return False
    return not any(_NORM_MODULE.search(name) for name in path[:-1])


def _labels(fn: str, option: str, predicate: Predicate, tree, yes, no):
    """Tree of `yes`/`no` from `predicate(path_names(path), leaf)` for every leaf of `tree`."""
    def label(path, leaf):
        answer = predicate(path_names(path), leaf)
        if not isinstance(answer, (bool, np.bool_)):
            raise TypeError(f"{fn}: the {option} predicate must return a Python bool, got "
                            f"{type(answer).__name__} for the parameter {'/'.join(path_names(path))}.")
        return yes if answer else no

    return jax.tree_util.tree_map_with_path(label, tree)


# ----------------------------------------------------------------------------------------------
# torch's AMSGrad as an Optax transform
# ----------------------------------------------------------------------------------------------
class ScaleByTorchAmsgradState(NamedTuple):
    """State of `scale_by_torch_amsgrad`; `mu`, `nu`, `nu_max` have the structure of the params.

    count: int32 `[]`, number of updates taken (`t` after the update).
    mu: first moment `m_t = b1 * m_{t-1} + (1 - b1) * g_t`, not bias-corrected (torch's `exp_avg`).
    nu: second moment `v_t = b2 * v_{t-1} + (1 - b2) * g_t**2`, not bias-corrected (`exp_avg_sq`).
    nu_max: `max(v_1, ..., v_t)` of the RAW second moments (torch's `max_exp_avg_sq`).
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                           eps_root: float = 0.0) -> optax.GradientTransformation:
    """AMSGrad's rescaling as in `torch.optim.Adam(amsgrad=True)`: the max is taken before bias correction.

    `v_max = max(v_max, v_t)`; `u_t = m_t / (1 - b1**t) / (sqrt(v_max / (1 - b2**t) + eps_root) + eps)`.

    `optax.scale_by_amsgrad` differs: it keeps `max(v_max, v_t / (1 - b2**t))` (the max of the
    bias-corrected moments), which stays at the large early `v_hat` when gradients shrink (tens of
    percent away from torch), or, with `bias_correction_nu=False`, never corrects `v` at all.
    Chain with `optax.scale_by_learning_rate` for the full optimizer.

    Args:
      b1, b2: decay rates of the first and second moments (torch's `betas`).
      eps: added to the denominator outside the square root (torch's `eps`).
      eps_root: added inside the square root (0 for torch; the course formula puts `eps` here).
    Returns: an `optax.GradientTransformation` with state `ScaleByTorchAmsgradState`.
    """

    def init_fn(params):
        zeros = lambda: optax.tree.zeros_like(params)  # noqa: E731
        return ScaleByTorchAmsgradState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(),
                                        nu_max=zeros())

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)  # torch: the max of the raw v_t
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_max_hat = optax.tree.bias_correction(nu_max, b2, count)  # corrected after the max
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_max_hat)
        return updates, ScaleByTorchAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return promotion_safe(optax.GradientTransformation(init_fn, update_fn))


# ----------------------------------------------------------------------------------------------
# torch's rules that Optax does not have: SGD with dampening, Adagrad, NAdam, RAdam
# ----------------------------------------------------------------------------------------------
def _is_zero(value) -> bool:
    """True for a Python number equal to 0 (a rule that can be left out); False for any array."""
    return isinstance(value, float | int) and value == 0


def _step_float(count):
    """The 1-based step `t` as a float in the default float dtype (float64 when x64 is on, as torch)."""
    return jnp.asarray(count, dtype=float)


def _one_minus_power(b, t):
    """`1 - b ** t` (a bias correction) for the float step `t`.

    With x64 on, or a traced `b`, torch's own formula. In float32 with a Python `b` it is
    `-expm1(t * log(b))` with `log(b)` taken in float64: `1 - b ** t` would first round `b` to
    float32 (0.999 -> 0.99900001) and be off by 1.3e-5 (relative) for small `t`.
    """
    if jax.config.jax_enable_x64 or not isinstance(b, float):
        return 1 - b ** t
    return -jnp.expm1(t * math.log(b))


class TraceWithDampeningState(NamedTuple):
    """State of `trace_with_dampening`: `count` int32 `[]` (updates taken), `trace` (torch's
    `momentum_buffer`, the structure of the params)."""

    count: jax.Array
    trace: optax.Updates


def trace_with_dampening(momentum: Hyper, dampening: Hyper, *, nesterov: bool = False
                         ) -> optax.GradientTransformation:
    """torch.optim.SGD's momentum buffer with `dampening`: `b = g` on the first step, then
    `b = momentum * b + (1 - dampening) * g`; the output is `b`, or `g + momentum * b` with `nesterov`.

    `optax.trace` is the case `dampening = 0`; with `dampening != 0` torch's first step is NOT
    dampened (`b = g`), which `optax.trace` cannot express. Chain with `optax.scale_by_learning_rate`.

    Args:
      momentum, dampening: numbers or arrays (may be traced).
      nesterov: Nesterov's look-ahead (torch requires `dampening == 0` with it).
    Returns: an `optax.GradientTransformation` with state `TraceWithDampeningState`.
    """

    def init_fn(params):
        return TraceWithDampeningState(count=jnp.zeros([], jnp.int32), trace=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        trace = jax.tree.map(lambda g, b: jnp.where(first, g, momentum * b + (1 - dampening) * g).astype(b.dtype),
                             updates, state.trace)
        out = jax.tree.map(lambda g, b: g + momentum * b, updates, trace) if nesterov else trace
        return out, TraceWithDampeningState(count=optax.safe_increment(state.count), trace=trace)

    return promotion_safe(optax.GradientTransformation(init_fn, update_fn))


class ScaleByTorchAdagradState(NamedTuple):
    """State of `scale_by_torch_adagrad`: `count` int32 `[]`, `sum_of_squares` (torch's `sum`:
    `initial_accumulator_value + sum of g**2`)."""

    count: jax.Array
    sum_of_squares: optax.Updates


def scale_by_torch_adagrad(lr_decay: Hyper = 0.0, initial_accumulator_value: Hyper = 0.0,
                           eps: Hyper = 1e-10) -> optax.GradientTransformation:
    """torch.optim.Adagrad's rescaling: `s = s + g**2`; `u = g / (sqrt(s) + eps) / (1 + (t - 1) * lr_decay)`.

    `optax.scale_by_rss` differs: `eps` inside the root only when `s == 0`
    (`g * rsqrt(s)`), and no `lr_decay`. Chain with `optax.scale_by_learning_rate`.

    Returns: an `optax.GradientTransformation` with state `ScaleByTorchAdagradState`.
    """

    def init_fn(params):
        return ScaleByTorchAdagradState(
            count=jnp.zeros([], jnp.int32),
            sum_of_squares=jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        sums = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)  # eps outside the root
        if not _is_zero(lr_decay):
            decay = 1 + (_step_float(count) - 1) * lr_decay
            updates = jax.tree.map(lambda u: (u / decay).astype(u.dtype), updates)
        return updates, ScaleByTorchAdagradState(count=count, sum_of_squares=sums)

    return promotion_safe(optax.GradientTransformation(init_fn, update_fn))


def _adam_moments(updates, state, b1, b2):
    """torch's `exp_avg.lerp_(g, 1 - b1)` and `exp_avg_sq = b2 * v + (1 - b2) * g**2`."""
    mu = jax.tree.map(lambda g, m: m + (1 - b1) * (g - m), updates, state.mu)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    return mu, nu


class ScaleByTorchNadamState(NamedTuple):
    """State of `scale_by_torch_nadam`: `count` int32 `[]`; `mu_product` `[]` (torch's
    `mu_product`, `prod_{i<=t} mu_i`); `mu`, `nu` the raw moments (`exp_avg`, `exp_avg_sq`)."""

    count: jax.Array
    mu_product: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_torch_nadam(b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8,
                         momentum_decay: Hyper = 4e-3) -> optax.GradientTransformation:
    """torch.optim.NAdam's rescaling (Dozat's NAdam with the momentum schedule `mu_t`).

    `mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))`, `P_t = mu_1 ... mu_t`;
    `m = b1 * m + (1 - b1) * g`, `v = b2 * v + (1 - b2) * g**2`, `d = sqrt(v / (1 - b2**t)) + eps`;
    `u = (1 - mu_t) / (1 - P_t) * g / d + mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d`.
    `optax.nadam` keeps `mu = b1` constant (no momentum schedule) and does not match torch. Chain with
    `optax.scale_by_learning_rate`.

    Returns: an `optax.GradientTransformation` with state `ScaleByTorchNadamState`.
    """

    def init_fn(params):
        return ScaleByTorchNadamState(count=jnp.zeros([], jnp.int32), mu_product=jnp.ones([], dtype=float),
                                      mu=optax.tree.zeros_like(params), nu=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = _step_float(count)
        mu_t = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = state.mu_product * mu_t
        mu, nu = _adam_moments(updates, state, b1, b2)
        bc2 = _one_minus_power(b2, t)
        c_grad = (1.0 - mu_t) / (1.0 - mu_product)
        c_mom = mu_next / (1.0 - mu_product * mu_next)

        def rule(g, m, v):
            d = jnp.sqrt(v / bc2) + eps  # eps outside the root, as torch
            return (c_grad * g / d + c_mom * m / d).astype(g.dtype)

        return (jax.tree.map(rule, updates, mu, nu),
                ScaleByTorchNadamState(count=count, mu_product=mu_product.astype(state.mu_product.dtype), mu=mu,
                                       nu=nu))

    return promotion_safe(optax.GradientTransformation(init_fn, update_fn))


class ScaleByTorchRadamState(NamedTuple):
    """State of `scale_by_torch_radam`: `count` int32 `[]`, the raw moments `mu`, `nu`."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def _radam_rho(b2, t):
    """RAdam's `rho_t = rho_inf - 2 t b2**t / (1 - b2**t)`, `rho_inf = 2 / (1 - b2) - 1`.

    With x64 on or a traced `b2`: torch's formula. In float32 that formula subtracts two numbers near
    `rho_inf` (2000 for 0.999) and keeps 1e-4 of absolute error; with `q = -log(b2)`, `s = t q` it is
    `(2 / (1 - b2) - 1 - 2 / q) + (2 / q) * (1 - s / expm1(s))`, the constant in float64 and the last
    factor from its series for `s < 1`: no cancellation.
    """
    rho_inf = 2 / (1 - b2) - 1
    if jax.config.jax_enable_x64 or not isinstance(b2, float):
        return rho_inf, rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    q = -math.log(b2)
    s = t * q
    series = s * (1 / 2 - s * (1 / 12 - s * s * (1 / 720 - s * s * (1 / 30240 - s * s / 1209600))))
    g = jnp.where(s < 1, series, 1 - s / jnp.expm1(jnp.maximum(s, 1)))
    return rho_inf, (rho_inf - 2 / q) + (2 / q) * g


def scale_by_torch_radam(b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8) -> optax.GradientTransformation:
    """torch.optim.RAdam's rescaling (Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, 2020).

    `m, v` as Adam; `m_hat = m / (1 - b1**t)`; `rho_t` as `_radam_rho`; when `rho_t > 5`:
    `u = m_hat * r_t * sqrt(1 - b2**t) / (sqrt(v) + eps)` with
    `r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))`; else `u = m_hat`.
    `optax.radam` puts `eps` on the bias-corrected root (`sqrt(v_hat) + eps`) and switches at
    `rho_t >= 5`; torch's `eps` is added to `sqrt(v)`. Chain with `optax.scale_by_learning_rate`.

    Returns: an `optax.GradientTransformation` with state `ScaleByTorchRadamState`.
    """

    def init_fn(params):
        return ScaleByTorchRadamState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params),
                                      nu=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = _step_float(count)
        mu, nu = _adam_moments(updates, state, b1, b2)
        bc1, bc2 = _one_minus_power(b1, t), _one_minus_power(b2, t)
        rho_inf, rho_t = _radam_rho(b2, t)
        rectified = rho_t > 5.0
        safe_rho = jnp.where(rectified, rho_t, 6.0)  # keeps the unused branch finite
        rect = jnp.sqrt((safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho))

        def rule(m, v):
            m_hat = m / bc1
            return jnp.where(rectified, m_hat * (jnp.sqrt(bc2) / (jnp.sqrt(v) + eps)) * rect, m_hat).astype(m.dtype)

        return jax.tree.map(rule, mu, nu), ScaleByTorchRadamState(count=count, mu=mu, nu=nu)

    return promotion_safe(optax.GradientTransformation(init_fn, update_fn))


# ----------------------------------------------------------------------------------------------
# the optimizers: clipping -> coupled decay -> rule [-> decoupled decay] -> -lr
# ----------------------------------------------------------------------------------------------
def _hyper(fn: str, name: str, value, **bounds):
    return check_real_or_array(fn, name, value, **bounds)


def _learning_rate(fn: str, learning_rate):
    if callable(learning_rate):
        return learning_rate
    return _hyper(fn, "learning_rate", learning_rate, minimum=0.0)


def _betas(fn: str, betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{fn}: betas must be a pair (b1, b2) such as (0.9, 0.999), got {betas!r}.")
    return (_hyper(fn, "betas[0]", betas[0], minimum=0.0, maximum=1.0, max_inclusive=False),
            _hyper(fn, "betas[1]", betas[1], minimum=0.0, maximum=1.0, max_inclusive=False))


def _eps(fn: str, eps, inside):
    """`(eps, eps_root)`: `sqrt(v) + eps` (torch) or `sqrt(v + eps)` (`eps_inside_sqrt=True`)."""
    eps = _hyper(fn, "eps", eps, minimum=0.0)
    return (0.0, eps) if check_bool(fn, "eps_inside_sqrt", inside) else (eps, 0.0)


def _mask(fn: str, mask):
    """The `weight_decay_mask` option as an Optax mask: `None` or params -> tree of bools."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "no_bias_no_norm":
            raise ValueError(f"{fn}: unknown weight_decay_mask preset {mask!r}; the preset is "
                             f"'no_bias_no_norm', or pass a predicate (path, param) -> bool.")
        mask = no_bias_no_norm
    elif not callable(mask):
        raise TypeError(f"{fn}: weight_decay_mask must be None, 'no_bias_no_norm' or a predicate "
                        f"(path, param) -> bool, got {type(mask).__name__}.")
    return lambda tree: _labels(fn, "weight_decay_mask", mask, tree, True, False)


def _assemble(fn: str, rule, learning_rate, *, weight_decay, weight_decay_mask, clip_value, clip_norm,
              trainable, decoupled: bool = False) -> optax.GradientTransformation:
    """`chain(clip_value, clip_norm, coupled decay, chain(*rule, decoupled decay, -lr))`, masked by `trainable`.

    The nesting (the rule and the rate in one inner chain) is the optimizer state's structure since the
    first release: checkpoints of sgd/rmsprop/adam/adamw/amsgrad keep restoring.
    """
    lr = _learning_rate(fn, learning_rate)
    wd = _hyper(fn, "weight_decay", weight_decay, minimum=0.0)
    mask = _mask(fn, weight_decay_mask)
    outer = []
    if clip_value is not None:
        outer.append(optax.clip(check_real(fn, "clip_value", clip_value, minimum=0.0, min_inclusive=False)))
    if clip_norm is not None:
        outer.append(optax.clip_by_global_norm(check_real(fn, "clip_norm", clip_norm, minimum=0.0,
                                                          min_inclusive=False)))
    inner = list(rule) if isinstance(rule, list) else [rule]  # a GradientTransformation is a tuple
    if decoupled:  # u = -lr * (rule(g) + wd * p): torch's p *= 1 - lr * wd (kept at wd = 0: optax.adamw's state)
        inner.append(optax.add_decayed_weights(wd, mask=mask))
    elif not _is_zero(wd):  # coupled L2: g += wd * p, before the rule
        outer.append(optax.add_decayed_weights(wd, mask=mask))
    inner.append(optax.scale_by_learning_rate(lr))
    tx = optax.chain(*outer, optax.chain(*inner))
    if trainable is not None:
        if not callable(trainable):
            raise TypeError(f"{fn}: trainable must be a predicate (path, param) -> bool, got "
                            f"{type(trainable).__name__}.")
        # -0.0 is the exact additive identity (x + -0.0 == x for every x, -0.0 too); +0.0 is not.
        frozen = optax.chain(optax.set_to_zero(), optax.scale(-1.0))
        tx = optax.multi_transform(
            {"trainable": tx, "frozen": frozen},
            lambda tree: _labels(fn, "trainable", trainable, tree, "trainable", "frozen"))
    return promotion_safe(tx)


def promotion_safe(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` with `init` and `update` traced under standard dtype promotion: Optax's own transforms rely on
    implicit promotion (e.g. `scale_by_adam`'s bias correction `b1 ** count`, a Python float to an int32
    power), so without this every optimizer would fail in a process that sets
    `jax_numpy_dtype_promotion="strict"`. Same state, same numbers."""

    def init_fn(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update_fn(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


_COMMON_DOC = """weight_decay: `>= 0`; torch's coupled L2 term added to the gradient before the rule,
        `g += weight_decay * p` (decoupled for adamw, and for nadam/radam with
        `decoupled_weight_decay=True`: `p -= lr * weight_decay * p`).
      weight_decay_mask: which leaves are decayed: `None` (all), a predicate `(path, param) -> bool`
        (True = decay) or `"no_bias_no_norm"` (`no_bias_no_norm`). NOT a torch.optim option (torch
        uses parameter groups for this).
      clip_value: clamp every gradient element to `[-clip_value, clip_value]` first (torch's
        `clip_grad_value_` before `step()`), `> 0`.
      clip_norm: rescale the gradient to global L2 norm `<= clip_norm` after `clip_value` (torch's
        `clip_grad_norm_`; torch divides by `norm + 1e-6`, Optax by `norm`), `> 0`.
      trainable: predicate `(path, param) -> bool`; False leaves get an update of exactly `-0.0`, no
        state, no decay, and are left out of the clipping norm."""


def _common_doc(function):
    function.__doc__ = function.__doc__.replace("{common}", _COMMON_DOC)
    return function


@_common_doc
def sgd(learning_rate: Hyper | optax.Schedule = 1e-3, *, momentum: Hyper = 0.0, dampening: Hyper = 0.0,
        nesterov: bool = False, weight_decay: Hyper = 0.0, weight_decay_mask=None, clip_value=None,
        clip_norm=None, trainable=None) -> optax.GradientTransformation:
    """torch.optim.SGD: `b = g` on the first step, then `b = momentum * b + (1 - dampening) * g`;
    `p -= lr * b`, or `p -= lr * (g + momentum * b)` with `nesterov=True`; `p -= lr * g` when
    `momentum == 0` (`dampening` unused then).

    `optax.sgd` equals this with `dampening = 0`; it has no dampening (its first step would be damped).

    Args:
      learning_rate: a number `>= 0`, an array (may be traced, e.g. under `jax.vmap`) or an
        `optax.Schedule` (step -> rate, from `jaxnets.train.schedules`). Default 1e-3 (torch's).
      momentum: `>= 0`. dampening: torch's `dampening`. nesterov: needs `momentum > 0` and
        `dampening == 0` (as torch).
      {common}
    Returns: an `optax.GradientTransformation`; pass `params` to `update` when decaying weights.
    Raises:
      TypeError: a value of the wrong type (a bool as a number, a string, ...).
      ValueError: a value out of range; `nesterov=True` with `momentum == 0` or `dampening != 0`.

    PyTorch: `sgd(0.1, momentum=0.9, weight_decay=5e-4)` is
    `torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)`.
    """
    fn = "sgd"
    momentum = _hyper(fn, "momentum", momentum, minimum=0.0)
    dampening = _hyper(fn, "dampening", dampening)
    nesterov = check_bool(fn, "nesterov", nesterov)
    if nesterov and (_is_zero(momentum) or not _is_zero(dampening)):
        raise ValueError(f"{fn}: nesterov=True needs momentum > 0 and dampening = 0 (as torch), got "
                         f"momentum={momentum!r} and dampening={dampening!r}.")
    if _is_zero(momentum):
        rule = optax.identity()
    elif _is_zero(dampening):
        rule = optax.trace(decay=momentum, nesterov=nesterov)  # b = momentum * b + g, b = g at first
    else:
        rule = trace_with_dampening(momentum, dampening, nesterov=nesterov)
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable)


@_common_doc
def rmsprop(learning_rate: Hyper | optax.Schedule = 1e-2, *, alpha: Hyper = 0.99, eps: Hyper = 1e-8,
            momentum: Hyper = 0.0, centered: bool = False, eps_inside_sqrt: bool = False,
            weight_decay: Hyper = 0.0, weight_decay_mask=None, clip_value=None, clip_norm=None,
            trainable=None) -> optax.GradientTransformation:
    """torch.optim.RMSprop: `v = alpha * v + (1 - alpha) * g**2`; `d = sqrt(v) + eps`, or
    `d = sqrt(v + eps)` with `eps_inside_sqrt=True`; `centered=True` uses `v - a**2` in place of
    `v` with `a = alpha * a + (1 - alpha) * g`; `p -= lr * g / d`, or with momentum
    `b = momentum * b + g / d`, `p -= lr * b`.

    Warning: `optax.rmsprop` multiplies by the rate BEFORE the momentum trace, so with a schedule old
    gradients keep old rates; torch's (and this) buffer holds `g / d` and the rate multiplies last.
    Optax's default `eps` is inside the root.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 1e-2 (torch's).
      alpha: in `[0, 1]`. eps: `>= 0`. momentum: `>= 0`. centered, eps_inside_sqrt: bools.
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered)`.
    """
    fn = "rmsprop"
    alpha = _hyper(fn, "alpha", alpha, minimum=0.0, maximum=1.0)
    eps = _hyper(fn, "eps", eps, minimum=0.0)
    inside = check_bool(fn, "eps_inside_sqrt", eps_inside_sqrt)
    momentum = _hyper(fn, "momentum", momentum, minimum=0.0)
    scale = optax.scale_by_stddev if check_bool(fn, "centered", centered) else optax.scale_by_rms
    rule = [scale(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=inside),
            optax.identity() if _is_zero(momentum) else optax.trace(decay=momentum)]
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable)


_ADAM_DOC = """`m = b1 * m + (1 - b1) * g`, `v = b2 * v + (1 - b2) * g**2`,
    `m_hat = m / (1 - b1**t)`, `v_hat = v / (1 - b2**t)`; `p -= lr * m_hat / (sqrt(v_hat) + eps)`
    (torch, Adam paper), or `p -= lr * m_hat / sqrt(v_hat + eps)` with `eps_inside_sqrt=True`."""


def _adam_like(fn, rule_fn, learning_rate, betas, eps, eps_inside_sqrt, decoupled, **common):
    b1, b2 = _betas(fn, betas)
    eps, eps_root = _eps(fn, eps, eps_inside_sqrt)
    return _assemble(fn, rule_fn(b1=b1, b2=b2, eps=eps, eps_root=eps_root), learning_rate,
                     decoupled=decoupled, **common)


@_common_doc
def adam(learning_rate: Hyper | optax.Schedule = 1e-3, *, betas=(0.9, 0.999), eps: Hyper = 1e-8,
         eps_inside_sqrt: bool = False, weight_decay: Hyper = 0.0, weight_decay_mask=None, clip_value=None,
         clip_norm=None, trainable=None) -> optax.GradientTransformation:
    """torch.optim.Adam: {adam}

    Numerics: `optax.scale_by_adam` evaluates `1 - b2**t` in float32, where 0.999 rounds to
    0.99900001: updates up to ~6e-6 (relative) smaller than torch's, which uses float64. With x64 on both
    are float64.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 1e-3.
      betas: `(b1, b2)`, each in `[0, 1)` (numbers or arrays). eps: `>= 0`. eps_inside_sqrt: bool.
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.Adam(params, lr, betas, eps, weight_decay)`.
    """
    return _adam_like("adam", optax.scale_by_adam, learning_rate, betas, eps, eps_inside_sqrt, False,
                      weight_decay=weight_decay, weight_decay_mask=weight_decay_mask, clip_value=clip_value,
                      clip_norm=clip_norm, trainable=trainable)


@_common_doc
def adamw(learning_rate: Hyper | optax.Schedule = 1e-3, *, betas=(0.9, 0.999), eps: Hyper = 1e-8,
          eps_inside_sqrt: bool = False, weight_decay: Hyper = 1e-2, weight_decay_mask=None, clip_value=None,
          clip_norm=None, trainable=None) -> optax.GradientTransformation:
    """torch.optim.AdamW: Adam plus DECOUPLED decay `p -= lr * weight_decay * p` (default 1e-2, torch's).

    Adam: {adam}

    The decay is scaled by the learning rate as in torch and `optax.adamw` (not by `lr / peak` as in
    the AdamW paper); `weight_decay_mask` applies to it.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 1e-3.
      betas, eps, eps_inside_sqrt: as `adam`.
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.AdamW(params, lr, betas, eps, weight_decay)`.
    """
    return _adam_like("adamw", optax.scale_by_adam, learning_rate, betas, eps, eps_inside_sqrt, True,
                      weight_decay=weight_decay, weight_decay_mask=weight_decay_mask, clip_value=clip_value,
                      clip_norm=clip_norm, trainable=trainable)


@_common_doc
def amsgrad(learning_rate: Hyper | optax.Schedule = 1e-3, *, betas=(0.9, 0.999), eps: Hyper = 1e-8,
            eps_inside_sqrt: bool = False, weight_decay: Hyper = 0.0, weight_decay_mask=None, clip_value=None,
            clip_norm=None, trainable=None) -> optax.GradientTransformation:
    """torch.optim.Adam(amsgrad=True): Adam with `v_max = max(v_max, v)` over the RAW second moments and
    `v_hat = v_max / (1 - b2**t)`.

    Warning: `optax.amsgrad` takes the max of bias-corrected moments and does not match torch (see
    `scale_by_torch_amsgrad`).

    Args: as `adam`.
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.Adam(params, lr, betas, eps, weight_decay, amsgrad=True)`.
    """
    return _adam_like("amsgrad", scale_by_torch_amsgrad, learning_rate, betas, eps, eps_inside_sqrt, False,
                      weight_decay=weight_decay, weight_decay_mask=weight_decay_mask, clip_value=clip_value,
                      clip_norm=clip_norm, trainable=trainable)


@_common_doc
def adagrad(learning_rate: Hyper | optax.Schedule = 1e-2, *, lr_decay: Hyper = 0.0,
            initial_accumulator_value: Hyper = 0.0, eps: Hyper = 1e-10, weight_decay: Hyper = 0.0,
            weight_decay_mask=None, clip_value=None, clip_norm=None, trainable=None
            ) -> optax.GradientTransformation:
    """torch.optim.Adagrad: `s = s + g**2` (`s` starts at `initial_accumulator_value`);
    `p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)`.

    Warning: `optax.adagrad` puts `eps` inside the root and starts `s` at 0.1; it has no `lr_decay`.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 1e-2 (torch's).
      lr_decay, initial_accumulator_value, eps: `>= 0` (defaults 0, 0, 1e-10: torch's).
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.Adagrad(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps)`.
    """
    fn = "adagrad"
    rule = scale_by_torch_adagrad(lr_decay=_hyper(fn, "lr_decay", lr_decay, minimum=0.0),
                                  initial_accumulator_value=_hyper(fn, "initial_accumulator_value",
                                                                   initial_accumulator_value, minimum=0.0),
                                  eps=_hyper(fn, "eps", eps, minimum=0.0))
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable)


@_common_doc
def adadelta(learning_rate: Hyper | optax.Schedule = 1.0, *, rho: Hyper = 0.9, eps: Hyper = 1e-6,
             weight_decay: Hyper = 0.0, weight_decay_mask=None, clip_value=None, clip_norm=None,
             trainable=None) -> optax.GradientTransformation:
    """torch.optim.Adadelta: `v = rho * v + (1 - rho) * g**2`;
    `d = sqrt(a + eps) / sqrt(v + eps) * g` (`a` from the previous step);
    `a = rho * a + (1 - rho) * d**2`; `p -= lr * d`. The rule is `optax.scale_by_adadelta`, the same
    formula.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 1.0 (torch's).
      rho: in `[0, 1]`. eps: `>= 0` (default 1e-6, torch's).
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.Adadelta(params, lr, rho, eps, weight_decay)`.
    """
    fn = "adadelta"
    rule = optax.scale_by_adadelta(rho=_hyper(fn, "rho", rho, minimum=0.0, maximum=1.0),
                                   eps=_hyper(fn, "eps", eps, minimum=0.0))
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable)


@_common_doc
def adamax(learning_rate: Hyper | optax.Schedule = 2e-3, *, betas=(0.9, 0.999), eps: Hyper = 1e-8,
           weight_decay: Hyper = 0.0, weight_decay_mask=None, clip_value=None, clip_norm=None,
           trainable=None) -> optax.GradientTransformation:
    """torch.optim.Adamax: `m = b1 * m + (1 - b1) * g`; `u = max(b2 * u, |g| + eps)`;
    `p -= lr / (1 - b1**t) * m / u`. The rule is `optax.scale_by_adamax`, the same formula.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 2e-3 (torch's).
      betas: `(b1, b2)` in `[0, 1)`. eps: `>= 0`.
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.Adamax(params, lr, betas, eps, weight_decay)`.
    """
    fn = "adamax"
    b1, b2 = _betas(fn, betas)
    rule = optax.scale_by_adamax(b1=b1, b2=b2, eps=_hyper(fn, "eps", eps, minimum=0.0))
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable)


@_common_doc
def nadam(learning_rate: Hyper | optax.Schedule = 2e-3, *, betas=(0.9, 0.999), eps: Hyper = 1e-8,
          momentum_decay: Hyper = 4e-3, decoupled_weight_decay: bool = False, weight_decay: Hyper = 0.0,
          weight_decay_mask=None, clip_value=None, clip_norm=None, trainable=None
          ) -> optax.GradientTransformation:
    """torch.optim.NAdam: the rule of `scale_by_torch_nadam` (momentum schedule
    `mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))`), then `p -= lr * u`.

    Warning: `optax.nadam` has no momentum schedule and does not match torch.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 2e-3 (torch's).
      betas: `(b1, b2)` in `[0, 1)`. eps: `>= 0`. momentum_decay: `>= 0` (torch's 4e-3).
      decoupled_weight_decay: torch's NAdamW: `p -= lr * weight_decay * p` instead of the L2 term.
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.NAdam(params, lr, betas, eps, weight_decay, momentum_decay,
    decoupled_weight_decay)`.
    """
    fn = "nadam"
    b1, b2 = _betas(fn, betas)
    rule = scale_by_torch_nadam(b1, b2, _hyper(fn, "eps", eps, minimum=0.0),
                                _hyper(fn, "momentum_decay", momentum_decay, minimum=0.0))
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable,
                     decoupled=check_bool(fn, "decoupled_weight_decay", decoupled_weight_decay))


@_common_doc
def radam(learning_rate: Hyper | optax.Schedule = 1e-3, *, betas=(0.9, 0.999), eps: Hyper = 1e-8,
          decoupled_weight_decay: bool = False, weight_decay: Hyper = 0.0, weight_decay_mask=None,
          clip_value=None, clip_norm=None, trainable=None) -> optax.GradientTransformation:
    """torch.optim.RAdam: the rule of `scale_by_torch_radam` (rectified Adam; plain bias-corrected
    momentum while `rho_t <= 5`), then `p -= lr * u`.

    Warning: `optax.radam` adds `eps` to the bias-corrected root and differs from torch.

    Args:
      learning_rate: number, array or schedule, `>= 0`; default 1e-3 (torch's).
      betas: `(b1, b2)` in `[0, 1)`. eps: `>= 0`.
      decoupled_weight_decay: `p -= lr * weight_decay * p` instead of the L2 term (torch's option).
      {common}
    Returns: an `optax.GradientTransformation`.
    Raises: TypeError for a wrong type, ValueError for a value out of range.

    PyTorch: `torch.optim.RAdam(params, lr, betas, eps, weight_decay, decoupled_weight_decay)`.
    """
    fn = "radam"
    b1, b2 = _betas(fn, betas)
    rule = scale_by_torch_radam(b1, b2, _hyper(fn, "eps", eps, minimum=0.0))
    return _assemble(fn, rule, learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                     clip_value=clip_value, clip_norm=clip_norm, trainable=trainable,
                     decoupled=check_bool(fn, "decoupled_weight_decay", decoupled_weight_decay))


adam.__doc__ = adam.__doc__.replace("{adam}", _ADAM_DOC)
adamw.__doc__ = adamw.__doc__.replace("{adam}", _ADAM_DOC)

_FUNCTIONS = {"sgd": sgd, "rmsprop": rmsprop, "adam": adam, "adamw": adamw, "amsgrad": amsgrad,
              "adagrad": adagrad, "adadelta": adadelta, "adamax": adamax, "nadam": nadam, "radam": radam}
OPTIMIZERS = tuple(_FUNCTIONS)


def optimizer(name: str, *, learning_rate: Hyper | optax.Schedule, **options: Any) -> optax.GradientTransformation:
    """Look up an optimizer by name (for the CLI and configs): `optimizer("sgd", learning_rate=0.1, **o)`
    is `sgd(0.1, **o)`.

    Args:
      name: one of `OPTIMIZERS` (case-insensitive): `"sgd"`, `"rmsprop"`, `"adam"`, `"adamw"`,
        `"amsgrad"`, `"adagrad"`, `"adadelta"`, `"adamax"`, `"nadam"`, `"radam"`.
      learning_rate: required here (a number, an array, or an `optax.Schedule`).
      **options: the keyword options of the function `name` (see its docstring).
    Returns: that function's `optax.GradientTransformation`.
    Raises:
      TypeError: `name` not a string; an option that `name` does not take (raised here, at once,
        naming it and listing the valid ones); a value of the wrong type.
      ValueError: unknown `name`; a value out of range.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer: name must be a string such as 'adam', got {type(name).__name__}.")
    function = _FUNCTIONS.get(name.lower())
    if function is None:
        raise ValueError(f"optimizer: unknown name {name!r}; valid names: "
                         f"{', '.join(repr(n) for n in OPTIMIZERS)}.")
    valid = [p for p in inspect.signature(function).parameters if p != "learning_rate"]
    unknown = [option for option in options if option not in valid]
    if unknown:
        raise TypeError(f"optimizer({name.lower()!r}): unknown option {unknown[0]!r}; valid options for "
                        f"{name.lower()!r}: {', '.join(sorted(valid))}.")
    return function(learning_rate, **options)
