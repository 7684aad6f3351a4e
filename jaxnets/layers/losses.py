"""Loss functions with PyTorch's semantics, reductions included.

Every loss takes `reduction`: `"none"` returns the per-element (or per-sample) losses, `"sum"`
their sum, `"mean"` their mean: PyTorch's plain mean over elements, except for the class-weighted
losses (`cross_entropy` and `nll_loss` with integer labels), whose mean is PyTorch's *weighted*
mean `sum_i w[y_i] * l_i / sum_i w[y_i]` over the non-ignored samples. `kl_div` also takes
`"batchmean"` (the sum divided by the batch size). The reduction logic lives in one place,
`_reduce` (validated up front by `_check_reduction`).

Inputs: every array argument must be an array (TypeError naming the loss otherwise). As in PyTorch, the
regression losses (`mse_loss`, `l1_loss`, `smooth_l1_loss`) need at least one floating input (two integer
arrays raise TypeError) and compute in the wider floating dtype of the two.

Class axis: this library is channels-last, so the class axis of `logits`/`log_probs` is the LAST
axis (`[N, K]` or `[N, ..., K]` with labels `[N, ...]`), where PyTorch's is axis 1
(`[N, K, ...]`). For PyTorch-shaped logits pass `jnp.moveaxis(logits, 1, -1)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from jaxnets.checks import check_array, check_bool, check_choice, check_int, check_real, check_real_or_array, concrete_or_none

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(fn: str, reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    """Validate `reduction` up front, before any work is traced: TypeError for a non-string."""
    check_choice(fn, "reduction", reduction, allowed)


def _reduce(loss: jax.Array, reduction: str, *, denominator=None) -> jax.Array:
    """Reduce unreduced losses as PyTorch does; the one place where reductions are implemented.

    `"mean"` divides the sum by `denominator` (the weight sum of a weighted mean) or, when it is
    None, by the number of elements of `loss`; `"batchmean"` divides the sum by `loss.shape[0]`.
    `reduction` was validated by `_check_reduction`.
    """
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    if reduction == "mean":
        # A mean over zero elements (or a zero weight sum) is 0 / 0 = nan, as in PyTorch.
        return total / (loss.size if denominator is None else denominator)
    # batchmean; PyTorch divides a 0-d input's sum by nothing.
    return total / loss.shape[0] if loss.ndim else total


def _check_logits(fn: str, name: str, logits: jax.Array) -> int:
    """Check a floating array with a trailing class axis; return the number of classes K."""
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a floating array, got dtype {logits.dtype}.")
    if logits.ndim < 1:
        raise ValueError(f"{fn}: {name} must have shape [N, ..., K] (classes last) or [K], got a 0-d array.")
    return logits.shape[-1]


def _check_class_labels(fn: str, name: str, logits: jax.Array, labels: jax.Array) -> None:
    """Check integer labels of shape `logits.shape[:-1]`."""
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{fn}: labels must be integer class indices, got dtype {labels.dtype}.")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{fn}: labels must have shape {logits.shape[:-1]} ({name} {logits.shape} without its "
                         f"last, class, axis), got {labels.shape}. The class axis is last here (PyTorch: axis 1); "
                         f"for [N, K, ...] {name} pass jnp.moveaxis({name}, 1, -1).")


def _check_class_weights(fn: str, name: str, weights, num_classes: int, dtype) -> jax.Array | None:
    """Check per-class weights of shape `[K]`."""
    if weights is None:
        return None
    weights = jnp.asarray(weights, dtype)
    if weights.shape != (num_classes,):
        raise ValueError(f"{fn}: {name} must have shape [K] = ({num_classes},), one per class, "
                         f"got {weights.shape}.")
    return weights


def _check_same_shape(fn: str, a_name: str, a: jax.Array, b_name: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{fn}: {b_name} must have the shape of {a_name} {a.shape}, got {b.shape}.")


def _check_broadcasts_to(fn: str, name: str, value_shape: tuple[int, ...], shape: tuple[int, ...]) -> None:
    try:
        ok = np.broadcast_shapes(value_shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} must broadcast to the logits shape {shape}, got {value_shape}.")


def _arrays(fn: str, **arrays) -> tuple[jax.Array, ...]:
    """Each keyword argument as a jax array; TypeError naming `fn` and the argument for a non-array."""
    return tuple(jnp.asarray(check_array(fn, name, value)) for name, value in arrays.items())


def _floating_pair(fn: str, a_name: str, a: jax.Array, b_name: str, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`a` and `b` cast to the wider floating dtype of the two (PyTorch's promotion, written out so it holds
    under strict dtype promotion); TypeError when neither is floating (PyTorch refuses integer losses)."""
    floats = [x.dtype for x in (a, b) if jnp.issubdtype(x.dtype, jnp.floating)]
    if not floats:
        raise TypeError(f"{fn}: {a_name} or {b_name} must be a floating-point array, got dtypes {a.dtype} and "
                        f"{b.dtype}; cast them first, e.g. {a_name}.astype(jnp.float32).")
    dtype = max(floats, key=lambda d: jnp.finfo(d).bits)
    return a.astype(dtype), b.astype(dtype)


def _gather_classes(values: jax.Array, labels: jax.Array) -> jax.Array:
    """`values[..., labels]` on the last axis (`values` is `[..., K]` or per-class `[K]`).

    Labels outside [0, K) give nan: JAX cannot raise on values under `jit`, so the loss shows it.
    """
    k = values.shape[-1]
    index = jnp.where(labels < 0, k, labels)  # negative labels are out of range, not wrapped from the end
    if values.ndim == 1:
        return jnp.take(values, index, mode="fill", fill_value=jnp.nan)
    return jnp.take_along_axis(values, index[..., None], axis=-1, mode="fill", fill_value=jnp.nan)[..., 0]


def _check_smoothing(fn: str, label_smoothing):
    """A float in [0, 1], or a traced scalar array (a concrete array is checked and returned as a float)."""
    label_smoothing = check_real_or_array(fn, "label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
    if isinstance(label_smoothing, float):
        return label_smoothing
    if jnp.shape(label_smoothing):
        raise ValueError(f"{fn}: label_smoothing must be a scalar, got an array of shape "
                         f"{tuple(jnp.shape(label_smoothing))}.")
    concrete = concrete_or_none(label_smoothing)
    return label_smoothing if concrete is None else float(concrete)


def _smooths(label_smoothing) -> bool:
    """Whether the smoothing term is computed: a float > 0, or a traced value (whose 0 gives the unsmoothed loss)."""
    return not isinstance(label_smoothing, float) or label_smoothing > 0.0


def _as_dtype(value, dtype):
    """A float as is (weakly typed); a traced value cast to `dtype` (so strict promotion holds)."""
    return value if isinstance(value, float) else jnp.asarray(value, dtype)


def _class_index_loss(log_probs: jax.Array, labels: jax.Array, weights, ignore_index: int,
                      label_smoothing) -> tuple[jax.Array, jax.Array]:
    """Per-sample losses and the weighted-mean denominator for integer labels (PyTorch's nll / smoothing).

    `loss_i = (1 - eps) * (-w[y_i] log p_{i, y_i}) + eps / K * sum_c (-w_c log p_{i, c})`, zero where
    `y_i == ignore_index`; the denominator is `sum_i w[y_i]` over the samples not ignored.
    """
    num_classes = log_probs.shape[-1]
    keep = labels != ignore_index
    safe = jnp.where(keep, labels, 0)
    target_weight = 1.0 if weights is None else _gather_classes(weights, safe)
    target_weight = jnp.where(keep, jnp.broadcast_to(target_weight, labels.shape), 0.0).astype(log_probs.dtype)
    loss = -target_weight * _gather_classes(log_probs, safe)
    if _smooths(label_smoothing):
        eps = _as_dtype(label_smoothing, log_probs.dtype)
        weighted = log_probs if weights is None else log_probs * weights
        smooth = jnp.where(keep, -jnp.sum(weighted, axis=-1), 0.0)
        loss = (1.0 - eps) * loss + (eps / num_classes) * smooth
    return loss, jnp.sum(target_weight)


def cross_entropy(logits: jax.Array, labels: jax.Array, *, weights: jax.Array | None = None,
                  label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean") -> jax.Array:
    """Softmax cross-entropy from unnormalised logits, with integer labels or probability targets.

    Computed as `-log_softmax(logits)` (log-sum-exp with the max subtracted, so it stays finite for
    logits of magnitude 1e4). With `eps = label_smoothing` and `log p = log_softmax(logits)`:

    - integer labels `y`: `l_i = (1 - eps) * (-w[y_i] log p_{i,y_i}) + eps/K * sum_c (-w_c log p_{i,c})`;
      `"mean"` is PyTorch's weighted mean `sum_i l_i / sum_i w[y_i]`; samples with
      `y_i == ignore_index` contribute 0 and are left out of the denominator.
    - probability targets `t` (floating, shape of `logits`): `t <- (1 - eps) t + eps / K`, then
      `l_i = -sum_c w_c t_{i,c} log p_{i,c}`; `"mean"` divides by the number of samples (not by a
      weight sum), as PyTorch does.

    Args:
      logits: `[N, K]`, `[N, ..., K]` or `[K]`; the class axis is LAST (PyTorch's is axis 1).
      labels: integer class indices of shape `logits.shape[:-1]` in `[0, K)` (others give nan), or
        floating class probabilities of the shape of `logits`.
      weights: optional per-class weights `[K]`.
      label_smoothing: `eps` in [0, 1]: a float, or a scalar array that may be traced (one value per
        member of a `jax.vmap`-ped population; checked only when concrete).
      ignore_index: integer label whose samples are ignored (PyTorch's default -100); must be negative
        (unused) with probability targets, as in PyTorch.
      reduction: `"mean"`, `"sum"` or `"none"` (losses of shape `logits.shape[:-1]`).
    Returns: the loss (scalar unless `reduction="none"`).
    Raises:
      ValueError: unknown reduction; labels/targets of the wrong shape; weights not `[K]`;
        label_smoothing outside [0, 1]; ignore_index >= 0 with probability targets.
      TypeError: a non-array input; non-floating logits; labels neither integer nor floating; a non-int
        ignore_index (a bool included); a label_smoothing that is not a real number; a non-string reduction.
    PyTorch: `torch.nn.functional.cross_entropy(moveaxis(logits, -1, 1), labels, weight=weights,
    ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)`.
    """
    fn = "cross_entropy"
    _check_reduction(fn, reduction)
    logits, labels = _arrays(fn, logits=logits, labels=labels)
    ignore_index = check_int(fn, "ignore_index", ignore_index)
    num_classes = _check_logits(fn, "logits", logits)
    label_smoothing = _check_smoothing(fn, label_smoothing)
    weights = _check_class_weights(fn, "weights", weights, num_classes, logits.dtype)
    prob_targets = jnp.issubdtype(labels.dtype, jnp.floating)
    if prob_targets:
        _check_same_shape(fn, "logits", logits, "probability targets (floating labels)", labels)
        if ignore_index >= 0:  # PyTorch refuses it too: there is no label to compare with
            raise ValueError(f"{fn}: ignore_index={ignore_index} cannot be used with probability targets "
                             f"(floating labels); leave it at its default -100.")
    else:
        _check_class_labels(fn, "logits", logits, labels)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # max-subtracted log-sum-exp: finite for any finite logits
    if prob_targets:
        targets = labels.astype(logits.dtype)
        if _smooths(label_smoothing):
            eps = _as_dtype(label_smoothing, targets.dtype)
            targets = targets * (1.0 - eps) + eps / num_classes
        weighted = log_probs if weights is None else log_probs * weights
        return _reduce(-jnp.sum(weighted * targets, axis=-1), reduction)
    loss, weight_sum = _class_index_loss(log_probs, labels, weights, ignore_index, label_smoothing)
    return _reduce(loss, reduction, denominator=weight_sum)


def nll_loss(log_probs: jax.Array, labels: jax.Array, *, weights: jax.Array | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> jax.Array:
    """Negative log-likelihood of integer labels given log-probabilities.

    `l_i = -w[y_i] * log_probs[i, y_i]`; `"mean"` is PyTorch's weighted mean `sum_i l_i / sum_i w[y_i]`
    over samples with `y_i != ignore_index` (ignored samples contribute 0).

    Args:
      log_probs: `[N, K]`, `[N, ..., K]` or `[K]`, class axis LAST (PyTorch's is axis 1).
      labels: integer class indices of shape `log_probs.shape[:-1]` in `[0, K)` (others give nan).
      weights: optional per-class weights `[K]`.
      ignore_index: label whose samples are ignored (PyTorch's default -100).
      reduction: `"mean"`, `"sum"` or `"none"`.
    Returns: the loss (shape `log_probs.shape[:-1]` for `"none"`).
    Raises: ValueError for an unknown reduction, labels of the wrong shape or weights not `[K]`;
      TypeError for non-integer labels, a non-int ignore_index, a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.nll_loss(moveaxis(log_probs, -1, 1), labels, weight=weights, ...)`.
    """
    fn = "nll_loss"
    _check_reduction(fn, reduction)
    log_probs, labels = _arrays(fn, log_probs=log_probs, labels=labels)
    ignore_index = check_int(fn, "ignore_index", ignore_index)
    num_classes = _check_logits(fn, "log_probs", log_probs)
    weights = _check_class_weights(fn, "weights", weights, num_classes, log_probs.dtype)
    _check_class_labels(fn, "log_probs", log_probs, labels)
    loss, weight_sum = _class_index_loss(log_probs, labels, weights, ignore_index, 0.0)
    return _reduce(loss, reduction, denominator=weight_sum)


def _regression_inputs(fn: str, pred, target, reduction: str) -> tuple[jax.Array, jax.Array]:
    """The checks every regression loss makes: the reduction, two arrays of one shape, a floating pair."""
    _check_reduction(fn, reduction)
    pred, target = _arrays(fn, pred=pred, target=target)
    _check_same_shape(fn, "pred", pred, "target", target)
    return _floating_pair(fn, "pred", pred, "target", target)


def mse_loss(pred: jax.Array, target: jax.Array, *, reduction: str = "mean") -> jax.Array:
    """Squared error `(pred - target)^2`, element-wise, then reduced.

    Args: `pred` and `target` of the same shape (no broadcasting: PyTorch warns on it as a likely bug);
      `reduction` in `"mean"`, `"sum"`, `"none"`.
    Raises: ValueError for a shape mismatch or an unknown reduction; TypeError for two integer arrays (as
      PyTorch), a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.mse_loss`.
    """
    fn = "mse_loss"
    pred, target = _regression_inputs(fn, pred, target, reduction)
    return _reduce(jnp.square(pred - target), reduction)


def _abs(d: jax.Array) -> jax.Array:
    # |d| written as d * sign(d): same value, but gradient sign(d) = 0 at d = 0 like PyTorch (jnp.abs gives 1).
    return d * jax.lax.stop_gradient(jnp.sign(d))


def l1_loss(pred: jax.Array, target: jax.Array, *, reduction: str = "mean") -> jax.Array:
    """Absolute error `|pred - target|`, element-wise, then reduced; gradient `sign(pred - target)`
    (0 at a tie, as in PyTorch).

    Args: `pred` and `target` of the same shape; `reduction` in `"mean"`, `"sum"`, `"none"`.
    Raises: ValueError for a shape mismatch or an unknown reduction; TypeError for two integer arrays (as
      PyTorch), a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.l1_loss`.
    """
    fn = "l1_loss"
    pred, target = _regression_inputs(fn, pred, target, reduction)
    return _reduce(_abs(pred - target), reduction)


def smooth_l1_loss(pred: jax.Array, target: jax.Array, *, beta: float = 1.0, reduction: str = "mean") -> jax.Array:
    """Huber-like loss: with `d = |pred - target|`, `0.5 d^2 / beta` if `d < beta` else `d - 0.5 beta`.

    Args:
      pred, target: arrays of the same shape.
      beta: >= 0, where the quadratic part turns linear; `beta = 0` is exactly `l1_loss` (as in PyTorch).
      reduction: `"mean"`, `"sum"` or `"none"`.
    Raises: ValueError for a shape mismatch, a negative beta or an unknown reduction; TypeError for two
      integer arrays (as PyTorch), a non-real beta, a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.smooth_l1_loss` (`huber_loss` is `beta *` this loss).
    """
    fn = "smooth_l1_loss"
    pred, target = _regression_inputs(fn, pred, target, reduction)
    beta = check_real(fn, "beta", beta, minimum=0.0)
    d = _abs(pred - target)
    if beta == 0:
        # PyTorch falls back to l1_loss; the quadratic branch would divide by zero (nan gradients).
        return _reduce(d, reduction)
    return _reduce(jnp.where(d < beta, 0.5 * jnp.square(d) / beta, d - 0.5 * beta), reduction)


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array, *, weights: jax.Array | None = None,
                                     pos_weight: jax.Array | None = None, reduction: str = "mean") -> jax.Array:
    """Sigmoid cross-entropy from logits, in PyTorch's stable form.

    `l = w * ((1 - t) x - (1 + (pos_weight - 1) t) log_sigmoid(x))`, which equals
    `-w (pos_weight t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))` without ever forming
    `sigmoid(x)` (`log_sigmoid(x) = -softplus(-x)` is finite for any `x`).

    Args:
      logits: `x` of any shape.
      targets: `t` in [0, 1], the shape of `logits`.
      weights: optional, broadcast to the shape of `logits` (an element-wise rescaling; unlike
        `cross_entropy`, `"mean"` is still the plain mean over elements, as in PyTorch).
      pos_weight: optional weight of positives, broadcast to the shape of `logits` (typically
        `[K]` for the last, class, axis).
      reduction: `"mean"`, `"sum"` or `"none"`.
    Raises: ValueError for a shape mismatch, weights or pos_weight that do not broadcast, an unknown reduction;
      TypeError for non-floating logits or targets (PyTorch refuses integer targets); TypeError for a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, weight=weights,
    pos_weight=pos_weight)`.
    """
    fn = "binary_cross_entropy_with_logits"
    _check_reduction(fn, reduction)
    logits, targets = _arrays(fn, logits=logits, targets=targets)
    _check_same_shape(fn, "logits", logits, "targets", targets)
    for name, value in (("logits", logits), ("targets", targets)):
        if not jnp.issubdtype(value.dtype, jnp.floating):  # PyTorch refuses integer inputs too
            raise TypeError(f"{fn}: {name} must be a floating array, got dtype {value.dtype}.")
    targets = targets.astype(logits.dtype)
    for name, value in (("pos_weight", pos_weight), ("weights", weights)):
        if value is not None:
            _check_broadcasts_to(fn, name, jnp.shape(value), logits.shape)
    log_sig = jax.nn.log_sigmoid(logits)  # -softplus(-x): finite for any finite x
    if pos_weight is not None:
        log_sig = log_sig * (1.0 + (jnp.asarray(pos_weight, logits.dtype) - 1.0) * targets)
    loss = (1.0 - targets) * logits - log_sig
    if weights is not None:
        loss = loss * jnp.asarray(weights, logits.dtype)
    return _reduce(loss, reduction)


def kl_div(log_input: jax.Array, target: jax.Array, *, reduction: str = "mean", log_target: bool = False) -> jax.Array:
    """Pointwise KL divergence `target * (log target - log_input)` (0 where `target == 0`).

    With `log_target=True` the target is given as log-probabilities: `exp(target) * (target - log_input)`.
    Note PyTorch's convention: `"mean"` is the mean over ALL elements (batch and classes), which is not the
    KL divergence; `"batchmean"` (the sum divided by `log_input.shape[0]`) is.

    Args:
      log_input: log-probabilities, any shape.
      target: probabilities (or log-probabilities), the shape of `log_input`.
      reduction: `"mean"`, `"batchmean"`, `"sum"` or `"none"`.
      log_target: whether `target` is in log space.
    Raises: ValueError for a shape mismatch or an unknown reduction; TypeError for integer inputs (as
      PyTorch), a non-bool log_target; TypeError for a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.kl_div(log_input, target, reduction=..., log_target=...)`.
    """
    fn = "kl_div"
    _check_reduction(fn, reduction, _REDUCTIONS + ("batchmean",))
    log_input, target = _arrays(fn, log_input=log_input, target=target)
    _check_same_shape(fn, "log_input", log_input, "target", target)
    log_target = check_bool(fn, "log_target", log_target)
    for name, value in (("log_input", log_input), ("target", target)):
        if not jnp.issubdtype(value.dtype, jnp.floating):  # PyTorch: "Integral inputs not supported"
            raise TypeError(f"{fn}: {name} must be a floating array, got dtype {value.dtype}.")
    log_input, target = _floating_pair(fn, "log_input", log_input, "target", target)
    if log_target:
        loss = jnp.exp(target) * (target - log_input)
    else:
        loss = xlogy(target, target) - target * log_input
    return _reduce(loss, reduction)


def margin_ranking_loss(x1: jax.Array, x2: jax.Array, y: jax.Array, *, margin: float = 0.0,
                        reduction: str = "mean") -> jax.Array:
    """`max(0, -y (x1 - x2) + margin)`: `y = 1` asks for `x1 > x2 + margin`, `y = -1` for the opposite.

    Args: `x1`, `x2`, `y` (entries +1 or -1) of the same shape; `margin`; `reduction`.
    Raises: ValueError for a shape mismatch or an unknown reduction; TypeError for integer x1 and x2, a
      non-real margin; TypeError for a non-array input or a non-string reduction.
    PyTorch: `torch.nn.functional.margin_ranking_loss` (gradient 1 at the kink, like its `clamp_min`).
    """
    fn = "margin_ranking_loss"
    _check_reduction(fn, reduction)
    x1, x2, y = _arrays(fn, x1=x1, x2=x2, y=y)
    _check_same_shape(fn, "x1", x1, "x2", x2)
    _check_same_shape(fn, "x1", x1, "y", y)
    margin = check_real(fn, "margin", margin)
    x1, x2 = _floating_pair(fn, "x1", x1, "x2", x2)
    y = y.astype(x1.dtype)  # +-1 labels, often integers
    z = -y * (x1 - x2) + margin
    # where(z >= 0) rather than maximum: PyTorch's clamp_min passes the gradient at z == 0.
    return _reduce(jnp.where(z >= 0, z, 0.0), reduction)


def focal_loss(logits: jax.Array, labels: jax.Array, *, gamma: float = 2.0, alpha=None,
               reduction: str = "mean") -> jax.Array:
    """Multi-class softmax focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    `l_i = -alpha_t (1 - p_t)^gamma log p_t` with `log p_t = log_softmax(logits)[i, y_i]`;
    `1 - p_t` is computed as `-expm1(log p_t)` (accurate when `p_t` is close to 1).
    `alpha_t` is 1 (`alpha=None`), the constant `alpha` (a float, the same for every class: not
    the binary convention of torchvision's `sigmoid_focal_loss`, where negatives get `1 - alpha`) or
    `alpha[y_i]` (a `[K]` array).
    `"mean"` is the plain mean over samples (alpha is a per-sample factor, not normalised like
    `cross_entropy`'s weights). `gamma = 0, alpha = None` is exactly `cross_entropy`.

    Args:
      logits: `[N, K]` or `[N, ..., K]`, class axis LAST.
      labels: integer class indices of shape `logits.shape[:-1]` in `[0, K)` (others give nan).
      gamma: focusing parameter, >= 0.
      alpha: None, a float, or per-class weights `[K]`.
      reduction: `"mean"`, `"sum"` or `"none"`.
    Raises: ValueError for labels of the wrong shape, alpha not `[K]`, a negative gamma, an unknown
      reduction; TypeError for non-integer labels, a non-real gamma or alpha; TypeError for a non-array input or a non-string reduction.
    PyTorch: no built-in (torchvision has only the sigmoid form, `sigmoid_focal_loss`).
    """
    fn = "focal_loss"
    _check_reduction(fn, reduction)
    logits, labels = _arrays(fn, logits=logits, labels=labels)
    num_classes = _check_logits(fn, "logits", logits)
    _check_class_labels(fn, "logits", logits, labels)
    gamma = check_real(fn, "gamma", gamma, minimum=0.0)
    if alpha is not None and jnp.ndim(alpha) == 0:
        alpha = check_real(fn, "alpha", alpha)
    if alpha is not None and jnp.ndim(alpha) != 0:
        alpha = _check_class_weights(fn, "alpha", alpha, num_classes, logits.dtype)
    log_pt = _gather_classes(jax.nn.log_softmax(logits, axis=-1), labels)
    loss = -log_pt
    if gamma != 0:  # gamma = 0 is plain cross-entropy: no modulating factor at all
        q = -jnp.expm1(log_pt)  # 1 - p_t, accurate when p_t is close to 1
        # q^gamma at q = 0 is 0; the double where keeps its gradient finite there (0, the true
        # derivative of q^gamma * (-log p_t) at p_t = 1) instead of 0 * inf = nan for gamma < 1.
        safe_q = jnp.where(q > 0, q, 1.0)
        loss = loss * jnp.where(q > 0, safe_q ** gamma, 0.0)
    if alpha is not None:
        alpha_t = jnp.asarray(alpha, logits.dtype) if jnp.ndim(alpha) == 0 else _gather_classes(alpha, labels)
        loss = alpha_t * loss
    return _reduce(loss, reduction)
