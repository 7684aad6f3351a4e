"""Optimizers with torch.optim's defaults and update rules, built as chains of Optax transforms.

``optimizer(name, learning_rate=..., **options)`` returns one ``optax.GradientTransformation``:

    clip (clip_value, then clip_norm) -> coupled weight decay -> the optimizer's own rule -> -lr

wrapped, when ``trainable=`` is given, in ``optax.multi_transform`` so that frozen parameters get a
``-0.0`` update and no optimizer state. Torch users clip the gradient before ``opt.step()`` and torch adds
``weight_decay * p`` to the gradient inside ``step``, so this order is torch's order. Every rule is an
Optax transform except torch's AMSGrad, which Optax does not have (``scale_by_torch_amsgrad`` below).

Predicates (``trainable=``, ``weight_decay_mask=``) are called on every parameter leaf as
``predicate(path, param) -> bool``, where ``path`` is the tuple of names leading to the leaf (see
``path_names``), e.g. ``("ResBlock_0", "BatchNorm_0", "scale")`` for a Flax ``params`` collection
(Flax names submodules ``ClassName_index``; the path starts with ``"params"`` if the whole variables
dict is optimized), and ``param`` the array (or, while updating, the update of the same shape and
dtype). They run in Python at ``init`` and each time ``update`` is traced, so they must decide from
names, shapes and dtypes and return a Python ``bool``, never a traced value.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.train.schedules import _number

__all__ = ["optimizer", "path_names", "no_bias_no_norm", "scale_by_torch_amsgrad",
           "ScaleByTorchAmsgradState", "OPTIMIZERS"]

Predicate = Callable[[tuple[str, ...], jax.Array], bool]

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw", "amsgrad")

# Options every optimizer takes, with their defaults.
_COMMON = {"weight_decay": 0.0, "weight_decay_mask": None, "clip_value": None, "clip_norm": None,
           "trainable": None}
# Each optimizer's own options and defaults: torch.optim's (AdamW's weight_decay=1e-2 included).
_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8, "eps_inside_sqrt": False}
_DEFAULTS = {
    "sgd": {"momentum": 0.0, "nesterov": False, "dampening": 0.0},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False, "eps_inside_sqrt": False},
    "adam": dict(_ADAM),
    "adamw": {**_ADAM, "weight_decay": 1e-2},
    "amsgrad": dict(_ADAM),
}


# ----------------------------------------------------------------------------------------------
# parameter paths and the predicates on them
# ----------------------------------------------------------------------------------------------
def path_names(path) -> tuple[str, ...]:
    """Turn a JAX key path (from ``jax.tree_util.tree_map_with_path``) into a tuple of names.

    Dict keys, attribute names and sequence indices all become strings:
    ``(DictKey('Conv_0'), DictKey('kernel')) -> ('Conv_0', 'kernel')``;
    ``(SequenceKey(2), GetAttrKey('w')) -> ('2', 'w')``.
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
    """Weight-decay predicate of the preset ``weight_decay_mask="no_bias_no_norm"``: True = decay.

    A leaf is NOT decayed when any of these holds:
    - it has ``ndim <= 1`` (every bias, every normalisation scale/offset, but also scalars and 1-D
      weights such as PReLU slopes or a learned temperature);
    - its own name is ``"bias"`` or ``"scale"`` (exact match);
    - a module on its path (any name but the last) contains ``"norm"`` (case-insensitive: BatchNorm_0,
      LayerNorm_1, GroupNorm_0, norm1) or has the token ``"bn"``: ``bn``, ``BN_0``, ``bn1``,
      ``conv_bn2`` (regex ``(^|_)bn\\d*(_|$)``, case-insensitive), so ``subnet`` is not a norm layer.
    Everything else (convolution and dense kernels, embeddings) is decayed.
    """
    if jnp.ndim(param) <= 1 or path[-1] in ("bias", "scale"):
        return False
    return not any(_NORM_MODULE.search(name) for name in path[:-1])


def _labels(fn: str, option: str, predicate: Predicate, tree, yes, no):
    """Tree of ``yes``/``no`` from ``predicate(path_names(path), leaf)`` for every leaf of ``tree``."""
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
    """State of ``scale_by_torch_amsgrad``; ``mu``, ``nu``, ``nu_max`` have the structure of the params.

    count: int32 ``[]``, number of updates taken (``t`` after the update).
    mu: first moment ``m_t = b1 * m_{t-1} + (1 - b1) * g_t``, not bias-corrected (torch's ``exp_avg``).
    nu: second moment ``v_t = b2 * v_{t-1} + (1 - b2) * g_t**2``, not bias-corrected (``exp_avg_sq``).
    nu_max: ``max(v_1, ..., v_t)`` of the RAW second moments (torch's ``max_exp_avg_sq``).
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                           eps_root: float = 0.0) -> optax.GradientTransformation:
    """AMSGrad's rescaling as in ``torch.optim.Adam(amsgrad=True)``: the max is taken before bias correction.

    ``v_max = max(v_max, v_t)``; ``u_t = m_t / (1 - b1**t) / (sqrt(v_max / (1 - b2**t) + eps_root) + eps)``.

    ``optax.scale_by_amsgrad`` differs: it keeps ``max(v_max, v_t / (1 - b2**t))`` (the max of the
    bias-corrected moments), which stays at the large early ``v_hat`` when gradients shrink (tens of
    percent away from torch), or, with ``bias_correction_nu=False``, never corrects ``v`` at all.
    Chain with ``optax.scale_by_learning_rate`` for the full optimizer.

    Args:
      b1, b2: decay rates of the first and second moments (torch's ``betas``).
      eps: added to the denominator outside the square root (torch's ``eps``).
      eps_root: added inside the square root (0 for torch; the course formula puts ``eps`` here).
    Returns: an ``optax.GradientTransformation`` with state ``ScaleByTorchAmsgradState``.
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

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# optimizer
# ----------------------------------------------------------------------------------------------
def optimizer(name: str, *, learning_rate: float | optax.Schedule,
              **options: Any) -> optax.GradientTransformation:
    """An Optax optimizer with torch.optim's defaults and update rule, so a PyTorch recipe reproduces.

    ``g`` is the gradient after clipping and coupled weight decay, ``lr`` the learning rate of this
    step, ``t`` the 1-based step; the state starts at zero. The update is applied as
    ``params = optax.apply_updates(params, updates)`` (``p + u``).

    ``"sgd"`` (torch.optim.SGD): ``b = momentum * b + g`` (``b = g`` on the first step);
    ``p -= lr * b``, or ``p -= lr * (g + momentum * b)`` with ``nesterov=True``; ``p -= lr * g`` when
    ``momentum == 0``. Options: ``momentum=0.0``, ``nesterov=False``, ``dampening=0`` (only 0).

    ``"rmsprop"`` (torch.optim.RMSprop): ``v = alpha * v + (1 - alpha) * g**2``;
    ``d = sqrt(v) + eps`` (torch), or ``d = sqrt(v + eps)`` with ``eps_inside_sqrt=True`` (the course's
    formula; Optax's default); ``centered=True`` uses ``v - a**2`` in place of ``v``, with
    ``a = alpha * a + (1 - alpha) * g``; ``p -= lr * g / d``, or with momentum
    ``b = momentum * b + g / d``, ``p -= lr * b``. Options: ``alpha=0.99``, ``eps=1e-8``,
    ``momentum=0.0``, ``centered=False``, ``eps_inside_sqrt=False``.

    ``"adam"`` (torch.optim.Adam): ``m = b1 * m + (1 - b1) * g``, ``v = b2 * v + (1 - b2) * g**2``,
    ``m_hat = m / (1 - b1**t)``, ``v_hat = v / (1 - b2**t)``;
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` (torch, Adam paper), or
    ``p -= lr * m_hat / sqrt(v_hat + eps)`` with ``eps_inside_sqrt=True`` (the course's formula).
    Options: ``betas=(0.9, 0.999)``, ``eps=1e-8``, ``eps_inside_sqrt=False``.

    ``"adamw"`` (torch.optim.AdamW): Adam plus DECOUPLED decay, ``p -= lr * weight_decay * p`` (scaled by
    the learning rate, as torch and ``optax.adamw``; not by ``lr / peak`` as in the AdamW paper).
    ``weight_decay`` defaults to 1e-2 as in torch; ``weight_decay_mask`` applies to it.

    ``"amsgrad"`` (torch.optim.Adam(amsgrad=True)): Adam with ``v_max = max(v_max, v)`` over the RAW
    second moments and ``v_hat = v_max / (1 - b2**t)`` (see ``scale_by_torch_amsgrad``; ``optax.amsgrad``
    takes the max of bias-corrected moments and does not match torch). Options as ``"adam"``.

    Options of every optimizer:
      weight_decay: ``>= 0``. For all but ``"adamw"``, torch's coupled L2 term added to the gradient
        before the optimizer, ``g += weight_decay * p`` (``optax.add_decayed_weights`` first in the
        chain, after clipping). Default 0 (1e-2 for ``"adamw"``).
      weight_decay_mask: which leaves are decayed: ``None`` (all), a predicate
        ``(path, param) -> bool`` (True = decay), or ``"no_bias_no_norm"`` (``no_bias_no_norm``: no
        decay for biases, normalisation parameters and any leaf with ``ndim <= 1``). Applied with
        Optax's mask mechanism (``add_decayed_weights(mask=...)``); no effect when the decay is 0.
      clip_value: clamp every gradient element to ``[-clip_value, clip_value]`` (``optax.clip``; torch's
        ``clip_grad_value_``), ``> 0``.
      clip_norm: rescale the gradient to global L2 norm ``<= clip_norm`` (``optax.clip_by_global_norm``;
        torch's ``clip_grad_norm_``), ``> 0``, applied after ``clip_value``. Torch's factor is
        ``clip_norm / (norm + 1e-6)``, Optax's ``clip_norm / norm``: clipped gradients differ by a
        relative ``1e-6 / norm`` (below ``1e-6 / clip_norm``).
      trainable: predicate ``(path, param) -> bool``; parameters where it is False get an update of
        exactly ``-0.0`` (``p + -0.0`` is ``p`` bit for bit, ``-0.0`` included), no optimizer state and no
        weight decay, and are left out of the clipping norm (as torch's ``clip_grad_norm_`` skips
        parameters without ``.grad``). Example, train only BatchNorm's scale and bias:
        ``trainable=lambda path, p: path[-1] in ("scale", "bias") and "BatchNorm" in path[-2]``.

    Args:
      name: ``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` or ``"amsgrad"`` (case-insensitive).
      learning_rate: a float ``>= 0``, or an ``optax.Schedule`` (step count -> rate), e.g. from
        ``jaxnets.train.schedules``. Torch's momentum buffers hold unscaled gradients, so the rate
        multiplies last, as in torch, and a schedule gives torch's trajectory too.
      **options: as listed above for ``name``.
    Returns: an ``optax.GradientTransformation`` (``init(params)``, ``update(grads, state, params)``);
      ``params`` must be passed to ``update`` when weight decay is used.
    Raises:
      ValueError: unknown ``name``; a value out of range (negative ``learning_rate``, ``eps``, ...);
        ``dampening != 0``; ``nesterov=True`` without momentum; an unknown ``weight_decay_mask`` preset.
      TypeError: an option that ``name`` does not take; a value of the wrong type.

    PyTorch: ``optimizer("sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4)`` is
    ``torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)``.

    Numerics: trajectories equal torch's to float32 rounding (tests/train/test_optim.py), with one
    known systematic difference: Optax evaluates Adam's bias correction ``1 - b2**t`` in float32, where
    0.999 rounds to 0.99900001 (1.3e-5 relative on ``1 - b2**t`` for small ``t``), torch in float64, so
    ``v_hat`` is slightly too large and adam/adamw/amsgrad updates are up to ~6e-6 (relative) smaller
    than torch's: a drift of at most ``1e-5 * lr`` per step.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer: name must be a string such as 'adam', got {type(name).__name__}.")
    key = name.lower()
    if key not in _DEFAULTS:
        raise ValueError(f"optimizer: unknown name {name!r}; valid names: "
                         f"{', '.join(repr(n) for n in OPTIMIZERS)}.")
    fn = f"optimizer({key!r})"
    defaults = {**_COMMON, **_DEFAULTS[key]}
    for option in options:
        if option not in defaults:
            raise TypeError(f"{fn}: unknown option {option!r}; valid options for {key!r}: "
                            f"{', '.join(sorted(defaults))}.")
    opts = {**defaults, **options}
    lr = _learning_rate(fn, learning_rate)
    weight_decay = _number(fn, "weight_decay", opts["weight_decay"], low=0.0)
    mask = _mask(fn, opts["weight_decay_mask"])

    # the optimizer's own rule, ending in the multiplication by -lr
    if key == "sgd":
        momentum = _number(fn, "momentum", opts["momentum"], low=0.0)
        nesterov = _flag(fn, "nesterov", opts["nesterov"])
        if _number(fn, "dampening", opts["dampening"]) != 0.0:
            raise ValueError(f"{fn}: only dampening=0 is supported (torch's default), got "
                             f"{opts['dampening']!r}.")
        if nesterov and momentum == 0.0:
            raise ValueError(f"{fn}: nesterov=True needs momentum > 0, got momentum={opts['momentum']!r}.")
        core = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)  # trace, then -lr: torch's
    elif key == "rmsprop":
        alpha = _number(fn, "alpha", opts["alpha"], low=0.0, high=1.0)
        eps = _number(fn, "eps", opts["eps"], low=0.0)
        momentum = _number(fn, "momentum", opts["momentum"], low=0.0)
        centered = _flag(fn, "centered", opts["centered"])
        inside = _flag(fn, "eps_inside_sqrt", opts["eps_inside_sqrt"])
        scale = optax.scale_by_stddev if centered else optax.scale_by_rms
        # Not optax.rmsprop: it multiplies by lr BEFORE the momentum trace, so a schedule would weigh
        # old gradients by old rates; torch's buffer holds g / d and lr multiplies it.
        core = optax.chain(scale(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=inside),
                           optax.trace(decay=momentum) if momentum else optax.identity(),
                           optax.scale_by_learning_rate(lr))
    else:  # adam, adamw, amsgrad
        b1, b2 = _betas(fn, opts["betas"])
        eps = _number(fn, "eps", opts["eps"], low=0.0)
        inside = _flag(fn, "eps_inside_sqrt", opts["eps_inside_sqrt"])
        eps, eps_root = (0.0, eps) if inside else (eps, 0.0)  # sqrt(v_hat + eps) or sqrt(v_hat) + eps
        if key == "adam":
            core = optax.adam(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        elif key == "adamw":
            # decoupled: u = -lr * (adam(g) + weight_decay * p), i.e. torch's p *= 1 - lr * weight_decay
            core = optax.adamw(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay,
                               mask=mask)
        else:
            core = optax.chain(scale_by_torch_amsgrad(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
                               optax.scale_by_learning_rate(lr))

    chain = []
    if opts["clip_value"] is not None:
        chain.append(optax.clip(_number(fn, "clip_value", opts["clip_value"], low=0.0, low_open=True)))
    if opts["clip_norm"] is not None:
        chain.append(optax.clip_by_global_norm(
            _number(fn, "clip_norm", opts["clip_norm"], low=0.0, low_open=True)))
    if weight_decay and key != "adamw":
        chain.append(optax.add_decayed_weights(weight_decay, mask=mask))  # coupled: g += wd * p
    tx = optax.chain(*chain, core)

    trainable = opts["trainable"]
    if trainable is not None:
        if not callable(trainable):
            raise TypeError(f"{fn}: trainable must be a predicate (path, param) -> bool, got "
                            f"{type(trainable).__name__}.")
        # -0.0 is the exact additive identity (x + -0.0 == x for every x, -0.0 too); +0.0 is not.
        frozen = optax.chain(optax.set_to_zero(), optax.scale(-1.0))
        tx = optax.multi_transform(
            {"trainable": tx, "frozen": frozen},
            lambda tree: _labels(fn, "trainable", trainable, tree, "trainable", "frozen"))
    return tx


def _learning_rate(fn: str, learning_rate):
    if callable(learning_rate):
        return learning_rate
    return _number(fn, "learning_rate", learning_rate, low=0.0)


def _flag(fn: str, option: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {option} must be True or False, got {type(value).__name__} {value!r}.")
    return bool(value)


def _betas(fn: str, betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{fn}: betas must be a pair (b1, b2) such as (0.9, 0.999), got {betas!r}.")
    return (_number(fn, "betas[0]", betas[0], low=0.0, high=1.0, high_open=True),
            _number(fn, "betas[1]", betas[1], low=0.0, high=1.0, high_open=True))


def _mask(fn: str, mask):
    """The ``weight_decay_mask`` option as an Optax mask: ``None`` or params -> tree of bools."""
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
