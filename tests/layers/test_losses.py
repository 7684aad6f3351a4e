"""Losses against torch.nn.functional: values and gradients (jax.vjp against torch autograd), every option.

Tolerance: float32 against float32, rtol = atol = 1e-5 unless a test says otherwise. The class axis is
last here and axis 1 in PyTorch, so the torch side moves it (`movedim(-1, 1)`) inside the function whose
gradient is taken: both gradients then come back in our layout.
"""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tolerances import FLOAT32
from jaxnets import layers

TOL = FLOAT32
# Every test uses these shapes (or one of them): JAX compiles each op once per shape, so sharing keeps the
# file fast.
REDUCTIONS = ("mean", "sum", "none")
SHAPES = ((6, 5), (3, 2, 4, 5))  # [N, K] and [N, H, W, K]


@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    # Tiny tensors: torch's thread pool only adds overhead (and competes with JAX on a 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_torch_classes(t):
    """Our [N, ..., K] -> PyTorch's [N, K, ...]."""
    return t.movedim(-1, 1).contiguous() if t.ndim > 1 else t  # nll_loss2d backward needs contiguous


def assert_vjp_parity(jax_f, torch_f, x, rng, tol=TOL):
    """Same value and same vector-Jacobian product (random cotangent) with respect to `x`."""
    y_jax, pull = jax.vjp(jax_f, jnp.asarray(x))
    cot = rng.standard_normal(y_jax.shape).astype(np.float32)
    (g_jax,) = pull(jnp.asarray(cot))
    xt = torch.tensor(x, requires_grad=True)
    y_torch = torch_f(xt)
    y_torch.backward(torch.tensor(cot))
    np.testing.assert_allclose(np.asarray(y_jax), y_torch.detach().numpy(), **tol)
    np.testing.assert_allclose(np.asarray(g_jax), xt.grad.numpy(), **tol)
    assert np.all(np.isfinite(np.asarray(g_jax)))
    return np.asarray(y_jax)


def class_inputs(rng, shape, *, scale=1.0, prob_targets=False):
    logits = (scale * rng.standard_normal(shape)).astype(np.float32)
    if prob_targets:
        t = rng.random(shape).astype(np.float32)
        return logits, t / t.sum(-1, keepdims=True)
    return logits, rng.integers(0, shape[-1], shape[:-1])


# ---------------------------------------------------------------- cross_entropy / nll_loss


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("prob_targets", [False, True])
def test_cross_entropy_matches_torch(rng, shape, use_weights, label_smoothing, reduction, prob_targets):
    logits, labels = class_inputs(rng, shape, prob_targets=prob_targets)
    weights = rng.uniform(0.2, 2.0, shape[-1]).astype(np.float32) if use_weights else None
    jax_f = lambda z: layers.cross_entropy(z, jnp.asarray(labels), weights=None if weights is None else jnp.asarray(weights),
                                           label_smoothing=label_smoothing, reduction=reduction)
    torch_f = lambda z: F.cross_entropy(to_torch_classes(z), to_torch_classes(torch.tensor(labels)) if prob_targets
                                        else torch.tensor(labels),
                                        weight=None if weights is None else torch.tensor(weights),
                                        label_smoothing=label_smoothing, reduction=reduction)
    assert_vjp_parity(jax_f, torch_f, logits, rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_ignore_index_matches_torch(rng, reduction, ignore_index, use_weights, label_smoothing):
    logits, labels = class_inputs(rng, SHAPES[1])
    labels[0, :2] = ignore_index
    labels[2, 1, 3] = ignore_index
    weights = rng.uniform(0.2, 2.0, 5).astype(np.float32) if use_weights else None
    jax_f = lambda z: layers.cross_entropy(z, jnp.asarray(labels), weights=weights, ignore_index=ignore_index,
                                           label_smoothing=label_smoothing, reduction=reduction)
    torch_f = lambda z: F.cross_entropy(to_torch_classes(z), torch.tensor(labels), ignore_index=ignore_index,
                                        weight=None if weights is None else torch.tensor(weights),
                                        label_smoothing=label_smoothing, reduction=reduction)
    out = assert_vjp_parity(jax_f, torch_f, logits, rng)
    if reduction == "none":
        assert np.all(out[labels == ignore_index] == 0)


def test_cross_entropy_unbatched_matches_torch(rng):
    logits = rng.standard_normal(5).astype(np.float32)
    assert_vjp_parity(lambda z: layers.cross_entropy(z, jnp.asarray(3), label_smoothing=0.1),
                      lambda z: F.cross_entropy(z, torch.tensor(3), label_smoothing=0.1), logits, rng)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("prob_targets", [False, True])
def test_cross_entropy_finite_for_huge_logits(rng, label_smoothing, prob_targets):
    # Logits of magnitude 1e4: exp overflows float32, log-sum-exp must not. Loss values are ~1e4, so rtol 1e-5
    # is float32 rounding of the result, and atol is scaled with them.
    logits, labels = class_inputs(rng, SHAPES[0], scale=1e4, prob_targets=prob_targets)
    for reduction in REDUCTIONS:
        out = assert_vjp_parity(
            lambda z: layers.cross_entropy(z, jnp.asarray(labels), label_smoothing=label_smoothing, reduction=reduction),
            lambda z: F.cross_entropy(z, torch.tensor(labels), label_smoothing=label_smoothing, reduction=reduction),
            logits, rng, tol=dict(rtol=1e-5, atol=1e-2))
        assert np.all(np.isfinite(out)) and np.all(out >= 0) and np.max(out) > 1e3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_weights", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(rng, shape, use_weights, reduction):
    logits, labels = class_inputs(rng, shape)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    labels.flat[0] = -100  # one ignored sample (PyTorch's default ignore_index)
    weights = rng.uniform(0.2, 2.0, shape[-1]).astype(np.float32) if use_weights else None
    assert_vjp_parity(
        lambda z: layers.nll_loss(z, jnp.asarray(labels), weights=weights, reduction=reduction),
        lambda z: F.nll_loss(to_torch_classes(z), torch.tensor(labels),
                             weight=None if weights is None else torch.tensor(weights), reduction=reduction),
        log_probs, rng)


def test_weighted_mean_is_weight_normalised(rng):
    # The PyTorch convention, written out: mean = sum_i w[y_i] l_i / sum_i w[y_i].
    logits, labels = class_inputs(rng, SHAPES[0])
    w = np.array([0.5, 1.0, 2.0, 4.0, 0.25], np.float32)
    per_sample = np.asarray(layers.cross_entropy(logits, labels, reduction="none"))
    expected = np.sum(w[labels] * per_sample) / np.sum(w[labels])
    np.testing.assert_allclose(layers.cross_entropy(logits, labels, weights=w), expected, **TOL)


def test_cross_entropy_out_of_range_label_gives_nan(rng):
    logits, labels = class_inputs(rng, SHAPES[0])
    for bad in (5, -1):
        assert np.isnan(layers.cross_entropy(logits, jnp.asarray(labels).at[1].set(bad)))


def test_cross_entropy_all_ignored_mean_is_nan_like_torch(rng):
    logits, _ = class_inputs(rng, SHAPES[0])
    labels = np.full(SHAPES[0][:1], -100)
    assert np.isnan(layers.cross_entropy(logits, labels))
    assert torch.isnan(F.cross_entropy(torch.tensor(logits), torch.tensor(labels)))


def test_cross_entropy_jit_and_vmap(rng):
    logits, labels = class_inputs(rng, SHAPES[1])  # vmap over the leading axis: 3 independent [2, 4, 5] batches
    f = functools.partial(layers.cross_entropy, label_smoothing=0.1, weights=jnp.arange(1.0, 6.0))
    np.testing.assert_allclose(jax.jit(f)(logits, labels), f(logits, labels), **TOL)
    per_sample = np.asarray(layers.cross_entropy(logits, labels, label_smoothing=0.1, weights=jnp.arange(1.0, 6.0),
                                                 reduction="none"))
    weight_sums = np.sum(np.arange(1.0, 6.0)[labels], axis=(1, 2))
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(logits, labels), per_sample.sum(axis=(1, 2)) / weight_sums, **TOL)


# ---------------------------------------------------------------- regression losses


def regression_inputs(rng, shape=SHAPES[1]):
    pred = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    target.flat[:3] = pred.flat[:3]  # exact ties: gradient of |d| at d = 0 (PyTorch: 0)
    return pred, target


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_mse_l1_match_torch(rng, reduction, name):
    pred, target = regression_inputs(rng)
    assert_vjp_parity(lambda p: getattr(layers, name)(p, jnp.asarray(target), reduction=reduction),
                      lambda p: getattr(F, name)(p, torch.tensor(target), reduction=reduction), pred, rng)
    # and with respect to the target
    assert_vjp_parity(lambda t: getattr(layers, name)(jnp.asarray(pred), t, reduction=reduction),
                      lambda t: getattr(F, name)(torch.tensor(pred), t, reduction=reduction), target, rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_smooth_l1_matches_torch(rng, reduction, beta):
    pred, target = regression_inputs(rng)
    assert_vjp_parity(lambda p: layers.smooth_l1_loss(p, jnp.asarray(target), beta=beta, reduction=reduction),
                      lambda p: F.smooth_l1_loss(p, torch.tensor(target), beta=beta, reduction=reduction), pred, rng)


def test_smooth_l1_beta_zero_is_l1(rng):
    pred, target = regression_inputs(rng)
    np.testing.assert_array_equal(layers.smooth_l1_loss(pred, target, beta=0.0, reduction="none"),
                                  layers.l1_loss(pred, target, reduction="none"))


# ---------------------------------------------------------------- binary cross-entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", [None, "per_class", "full"])
@pytest.mark.parametrize("use_pos_weight", [False, True])
def test_bce_with_logits_matches_torch(rng, reduction, weights, use_pos_weight):
    shape = SHAPES[1]
    logits = (3 * rng.standard_normal(shape)).astype(np.float32)
    targets = rng.random(shape).astype(np.float32)  # soft targets in [0, 1]
    targets.flat[:4] = [0.0, 1.0, 0.0, 1.0]
    w = {None: None, "per_class": rng.uniform(0.2, 2, 5), "full": rng.uniform(0.2, 2, shape)}[weights]
    w = None if w is None else w.astype(np.float32)
    pw = rng.uniform(0.5, 3.0, 5).astype(np.float32) if use_pos_weight else None
    assert_vjp_parity(
        lambda z: layers.binary_cross_entropy_with_logits(z, jnp.asarray(targets), weights=w, pos_weight=pw,
                                                          reduction=reduction),
        lambda z: F.binary_cross_entropy_with_logits(z, torch.tensor(targets),
                                                     weight=None if w is None else torch.tensor(w),
                                                     pos_weight=None if pw is None else torch.tensor(pw),
                                                     reduction=reduction),
        logits, rng)


def test_bce_with_logits_finite_for_huge_logits(rng):
    logits = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32)
    targets = np.array([1.0, 1.0, 0.5, 0.0, 0.0], np.float32)
    out = assert_vjp_parity(
        lambda z: layers.binary_cross_entropy_with_logits(z, jnp.asarray(targets), reduction="none"),
        lambda z: F.binary_cross_entropy_with_logits(z, torch.tensor(targets), reduction="none"), logits, rng)
    np.testing.assert_allclose(out[[0, 4]], [1e4, 1e4], rtol=1e-6)


# ---------------------------------------------------------------- kl_div


@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(rng, reduction, log_target):
    log_input = np.asarray(jax.nn.log_softmax(rng.standard_normal(SHAPES[0]), axis=-1)).astype(np.float32)
    target = np.asarray(jax.nn.softmax(rng.standard_normal(SHAPES[0]), axis=-1)).astype(np.float32)
    target[0, :2] = 0.0  # 0 log 0 = 0
    if log_target:
        target = np.log(target + 1e-3).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that "mean" is not the KL divergence
        assert_vjp_parity(lambda x: layers.kl_div(x, jnp.asarray(target), reduction=reduction, log_target=log_target),
                          lambda x: F.kl_div(x, torch.tensor(target), reduction=reduction, log_target=log_target),
                          log_input, rng)


def test_kl_div_batchmean_is_the_kl_divergence(rng):
    p = rng.random(SHAPES[0]) + 0.01
    p /= p.sum(-1, keepdims=True)
    q = rng.random(SHAPES[0]) + 0.01
    q /= q.sum(-1, keepdims=True)
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    np.testing.assert_allclose(layers.kl_div(np.log(q).astype(np.float32), p.astype(np.float32),
                                             reduction="batchmean"), kl, **TOL)


# ---------------------------------------------------------------- margin ranking


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_margin_ranking_matches_torch(rng, reduction, margin):
    x1 = rng.standard_normal(SHAPES[0]).astype(np.float32)
    x2 = rng.standard_normal(SHAPES[0]).astype(np.float32)
    y = rng.choice([-1.0, 1.0], SHAPES[0]).astype(np.float32)
    x2[0] = x1[0]  # z = margin exactly: with margin 0 this is the kink, where torch's clamp_min passes the gradient
    assert_vjp_parity(lambda a: layers.margin_ranking_loss(a, jnp.asarray(x2), jnp.asarray(y), margin=margin,
                                                           reduction=reduction),
                      lambda a: F.margin_ranking_loss(a, torch.tensor(x2), torch.tensor(y), margin=margin,
                                                      reduction=reduction), x1, rng)
    assert_vjp_parity(lambda b: layers.margin_ranking_loss(jnp.asarray(x1), b, jnp.asarray(y), margin=margin,
                                                           reduction=reduction),
                      lambda b: F.margin_ranking_loss(torch.tensor(x1), b, torch.tensor(y), margin=margin,
                                                      reduction=reduction), x2, rng)


# ---------------------------------------------------------------- focal loss


def focal_numpy(logits, labels, gamma, alpha):
    """Hand reference in float64, one sample at a time: -alpha_t (1 - p_t)^gamma log p_t."""
    z = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    out = []
    for row, y in zip(z, labels.reshape(-1)):
        log_p = row - row.max() - np.log(np.sum(np.exp(row - row.max())))
        a = 1.0 if alpha is None else (alpha if np.ndim(alpha) == 0 else alpha[y])
        out.append(-a * (1.0 - np.exp(log_p[y])) ** gamma * log_p[y])
    return np.array(out).reshape(labels.shape)


def focal_torch(z, labels, gamma, alpha):
    log_pt = torch.log_softmax(z, -1).gather(-1, labels[..., None])[..., 0]
    a = 1.0 if alpha is None else (alpha if np.ndim(alpha) == 0 else torch.tensor(alpha)[labels])
    return -a * (1 - log_pt.exp()) ** gamma * log_pt


ALPHAS = {"none": None, "float": 0.25, "per_class": np.array([0.1, 0.5, 1.0, 2.0, 0.7], np.float32)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", list(ALPHAS))
def test_focal_loss_matches_hand_reference_and_torch_autograd(rng, shape, gamma, alpha):
    alpha = ALPHAS[alpha]
    logits, labels = class_inputs(rng, shape, scale=2.0)
    expected = focal_numpy(logits, labels, gamma, alpha)
    reduce = {"none": lambda v: v, "sum": np.sum, "mean": np.mean}
    for reduction in REDUCTIONS:
        out = layers.focal_loss(logits, labels, gamma=gamma, alpha=alpha, reduction=reduction)
        np.testing.assert_allclose(out, reduce[reduction](expected), **TOL)
    # gradient: jax.vjp against torch autograd of the same formula
    lt = torch.tensor(labels)
    assert_vjp_parity(lambda z: layers.focal_loss(z, jnp.asarray(labels), gamma=gamma, alpha=alpha, reduction="none"),
                      lambda z: focal_torch(z, lt, gamma, alpha), logits, rng)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_loss_gamma0_is_torch_cross_entropy(rng, shape, reduction):
    logits, labels = class_inputs(rng, shape)
    assert_vjp_parity(lambda z: layers.focal_loss(z, jnp.asarray(labels), gamma=0.0, reduction=reduction),
                      lambda z: F.cross_entropy(to_torch_classes(z), torch.tensor(labels), reduction=reduction),
                      logits, rng)


def test_focal_loss_down_weights_easy_examples(rng):
    logits, labels = class_inputs(rng, SHAPES[1], scale=3.0)
    ce = np.asarray(layers.cross_entropy(logits, labels, reduction="none"))
    fl = np.asarray(layers.focal_loss(logits, labels, gamma=2.0, reduction="none"))
    assert np.all(fl <= ce) and np.any(fl < 0.5 * ce)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_loss_finite_for_huge_logits(rng, gamma):
    # p_t = 1 exactly for the confident-correct rows: (1 - p_t)^gamma = 0 must not give a nan gradient.
    logits, labels = class_inputs(rng, SHAPES[0], scale=1e4)
    logits[np.arange(4), labels[:4]] = 3e4
    loss, grad = jax.value_and_grad(lambda z: layers.focal_loss(z, labels, gamma=gamma, reduction="sum"))(logits)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(np.asarray(grad)[:4], 0.0)


# ---------------------------------------------------------------- errors


def _call_all_losses(reduction):
    z, y = jnp.zeros((2, 3)), jnp.array([0, 1])
    return [
        lambda: layers.cross_entropy(z, y, reduction=reduction),
        lambda: layers.nll_loss(z, y, reduction=reduction),
        lambda: layers.mse_loss(z, z, reduction=reduction),
        lambda: layers.l1_loss(z, z, reduction=reduction),
        lambda: layers.smooth_l1_loss(z, z, reduction=reduction),
        lambda: layers.binary_cross_entropy_with_logits(z, z, reduction=reduction),
        lambda: layers.kl_div(z, z, reduction=reduction),
        lambda: layers.margin_ranking_loss(z, z, z, reduction=reduction),
        lambda: layers.focal_loss(z, y, reduction=reduction),
    ]


NAMES = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits",
         "kl_div", "margin_ranking_loss", "focal_loss"]


@pytest.mark.parametrize("i", range(len(NAMES)))
def test_unknown_reduction_raises(i):
    with pytest.raises(ValueError, match=rf"{NAMES[i]}: unknown reduction 'avg'; expected one of"):
        _call_all_losses("avg")[i]()


@pytest.mark.parametrize("i", [j for j, n in enumerate(NAMES) if n != "kl_div"])
def test_batchmean_only_for_kl_div(i):
    with pytest.raises(ValueError, match=rf"{NAMES[i]}: unknown reduction 'batchmean'; expected one of"):
        _call_all_losses("batchmean")[i]()


def test_cross_entropy_label_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"cross_entropy: labels must have shape \(4,\) .* got \(5,\).*moveaxis"):
        layers.cross_entropy(jnp.zeros((4, 3)), jnp.zeros(5, jnp.int32))


def test_cross_entropy_channels_first_labels_raise():
    # PyTorch-shaped [N, K, H] logits with [N, H] labels: the class axis must be moved last.
    with pytest.raises(ValueError, match=r"cross_entropy: labels must have shape \(2, 5\) .*got \(2, 4\)"):
        layers.cross_entropy(jnp.zeros((2, 5, 4)), jnp.zeros((2, 4), jnp.int32))


def test_cross_entropy_prob_target_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"cross_entropy: probability targets .* shape of logits \(4, 3\), got \(4, 2\)"):
        layers.cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 2)))


def test_cross_entropy_weights_wrong_length_raises():
    with pytest.raises(ValueError, match=r"cross_entropy: weights must have shape \[K\] = \(3,\).*got \(4,\)"):
        layers.cross_entropy(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), weights=jnp.ones(4))


def test_nll_loss_weights_wrong_length_raises():
    with pytest.raises(ValueError, match=r"nll_loss: weights must have shape \[K\] = \(3,\).*got \(2,\)"):
        layers.nll_loss(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), weights=jnp.ones(2))


@pytest.mark.parametrize("eps", [-0.1, 1.5])
def test_cross_entropy_label_smoothing_out_of_range_raises(eps):
    with pytest.raises(ValueError, match=rf"cross_entropy: label_smoothing must be a finite real number in \[0.0, 1.0\], got {eps}"):
        layers.cross_entropy(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), label_smoothing=eps)


def test_cross_entropy_label_smoothing_not_a_number_raises():
    with pytest.raises(TypeError, match="cross_entropy: label_smoothing must be a real number in \\[0.0, 1.0\\], got str '0.1'"):
        layers.cross_entropy(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), label_smoothing="0.1")


def test_cross_entropy_ignore_index_with_prob_targets_raises():
    with pytest.raises(ValueError, match="cross_entropy: ignore_index=0 cannot be used with probability targets"):
        layers.cross_entropy(jnp.zeros((4, 3)), jnp.ones((4, 3)) / 3, ignore_index=0)
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
        F.cross_entropy(torch.zeros(4, 3), torch.ones(4, 3) / 3, ignore_index=0)  # the same rule in PyTorch


def test_cross_entropy_bool_labels_raise():
    with pytest.raises(TypeError, match="cross_entropy: labels must be integer class indices, got dtype bool"):
        layers.cross_entropy(jnp.zeros((2, 3)), jnp.array([True, False]))


def test_cross_entropy_integer_logits_raise():
    with pytest.raises(TypeError, match="cross_entropy: logits must be a floating array, got dtype int32"):
        layers.cross_entropy(jnp.zeros((2, 3), jnp.int32), jnp.array([0, 1]))


def test_cross_entropy_scalar_logits_raise():
    with pytest.raises(ValueError, match=r"cross_entropy: logits must have shape \[N, ..., K\]"):
        layers.cross_entropy(jnp.zeros(()), jnp.array(0))


def test_cross_entropy_ignore_index_not_int_raises():
    with pytest.raises(TypeError, match="cross_entropy: ignore_index must be an int, got float 0.5"):
        layers.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1]), ignore_index=0.5)


def test_nll_loss_float_labels_raise():
    with pytest.raises(TypeError, match="nll_loss: labels must be integer class indices, got dtype float32"):
        layers.nll_loss(jnp.zeros((2, 3)), jnp.zeros(2))


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss"])
def test_regression_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=rf"{name}: target must have the shape of pred \(2, 3\), got \(3,\)"):
        getattr(layers, name)(jnp.zeros((2, 3)), jnp.zeros(3))


def test_smooth_l1_negative_beta_raises():
    with pytest.raises(ValueError, match="smooth_l1_loss: beta must be a finite real number >= 0.0, got -1.0"):
        layers.smooth_l1_loss(jnp.zeros(3), jnp.zeros(3), beta=-1.0)


def test_bce_target_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: targets must have the shape of logits"):
        layers.binary_cross_entropy_with_logits(jnp.zeros((2, 3)), jnp.zeros((2, 1)))


@pytest.mark.parametrize("arg", ["weights", "pos_weight"])
def test_bce_weights_not_broadcastable_raise(arg):
    with pytest.raises(ValueError, match=rf"binary_cross_entropy_with_logits: {arg} must broadcast to the logits "
                                         r"shape \(2, 3\), got \(4,\)"):
        layers.binary_cross_entropy_with_logits(jnp.zeros((2, 3)), jnp.zeros((2, 3)), **{arg: jnp.ones(4)})


def test_bce_weights_that_would_grow_the_output_raise():
    with pytest.raises(ValueError, match=r"weights must broadcast to the logits shape \(3,\), got \(2, 3\)"):
        layers.binary_cross_entropy_with_logits(jnp.zeros(3), jnp.zeros(3), weights=jnp.ones((2, 3)))


def test_kl_div_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"kl_div: target must have the shape of log_input \(2, 3\), got \(2, 4\)"):
        layers.kl_div(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_margin_ranking_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"margin_ranking_loss: y must have the shape of x1 \(3,\), got \(1,\)"):
        layers.margin_ranking_loss(jnp.zeros(3), jnp.zeros(3), jnp.ones(1))


def test_focal_loss_alpha_wrong_length_raises():
    with pytest.raises(ValueError, match=r"focal_loss: alpha must have shape \[K\] = \(3,\).*got \(2,\)"):
        layers.focal_loss(jnp.zeros((2, 3)), jnp.array([0, 1]), alpha=jnp.ones(2))


def test_focal_loss_negative_gamma_raises():
    with pytest.raises(ValueError, match="focal_loss: gamma must be a finite real number >= 0.0, got -1"):
        layers.focal_loss(jnp.zeros((2, 3)), jnp.array([0, 1]), gamma=-1)


def test_focal_loss_label_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"focal_loss: labels must have shape \(2,\)"):
        layers.focal_loss(jnp.zeros((2, 3)), jnp.array([0, 1, 2]))


@pytest.mark.parametrize("i", range(len(NAMES)))
def test_non_string_reduction_raises_type_error(i):
    with pytest.raises(TypeError, match=rf"{NAMES[i]}: reduction must be a string"):
        _call_all_losses(None)[i]()


def _losses_with_bad_first_input(bad):
    z, y = jnp.zeros((2, 3)), jnp.array([0, 1])
    return {
        "cross_entropy": lambda: layers.cross_entropy(bad, y),
        "nll_loss": lambda: layers.nll_loss(bad, y),
        "mse_loss": lambda: layers.mse_loss(bad, z),
        "l1_loss": lambda: layers.l1_loss(bad, z),
        "smooth_l1_loss": lambda: layers.smooth_l1_loss(bad, z),
        "binary_cross_entropy_with_logits": lambda: layers.binary_cross_entropy_with_logits(bad, z),
        "kl_div": lambda: layers.kl_div(bad, z),
        "margin_ranking_loss": lambda: layers.margin_ranking_loss(bad, z, z),
        "focal_loss": lambda: layers.focal_loss(bad, y),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}], ids=["str", "None", "dict"])
def test_non_array_input_raises_type_error(name, bad):
    with pytest.raises(TypeError, match=rf"{name}: \w+ must be an array"):
        _losses_with_bad_first_input(bad)[name]()


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss"])
def test_regression_losses_on_two_integer_arrays_raise_like_torch(name):
    a, b = np.array([1, 2, 3]), np.array([2, 2, 2])
    with pytest.raises((RuntimeError, NotImplementedError)):  # what torch does
        getattr(F, name)(torch.tensor(a), torch.tensor(b))
    with pytest.raises(TypeError, match=rf"{name}: pred or target must be a floating-point array, got dtypes "
                                        r"int32 and int32"):
        getattr(layers, name)(jnp.asarray(a), jnp.asarray(b))


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss"])
def test_regression_losses_promote_one_integer_input_like_torch(name):
    a, b = np.array([1.0, 2.5, 3.0], np.float32), np.array([2, 2, 2])
    want = getattr(F, name)(torch.tensor(a), torch.tensor(b)).item()
    got = getattr(layers, name)(jnp.asarray(a), jnp.asarray(b, jnp.int32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    np.testing.assert_allclose(float(getattr(layers, name)(jnp.asarray(b, jnp.int32), jnp.asarray(a))),
                               getattr(F, name)(torch.tensor(b), torch.tensor(a)).item(), rtol=1e-6)


def test_margin_ranking_loss_takes_integer_labels():
    x1, x2, y = np.array([1.0, 2.0, 0.5], np.float32), np.array([2.0, 1.0, 0.5], np.float32), np.array([1, -1, 1])
    want = F.margin_ranking_loss(torch.tensor(x1), torch.tensor(x2), torch.tensor(y), margin=0.1).item()
    got = layers.margin_ranking_loss(x1, x2, jnp.asarray(y, jnp.int32), margin=0.1)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_kl_div_and_bce_reject_integer_inputs():
    with pytest.raises(TypeError, match="kl_div: target must be a floating array, got dtype int32"):
        layers.kl_div(jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="binary_cross_entropy_with_logits: targets must be a floating array"):
        layers.binary_cross_entropy_with_logits(jnp.zeros(3), jnp.zeros(3, jnp.int32))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: layers.smooth_l1_loss(jnp.zeros(3), jnp.zeros(3), beta="1"), TypeError, "smooth_l1_loss: beta must be a real"),
    (lambda: layers.focal_loss(jnp.zeros((2, 3)), jnp.array([0, 1]), gamma=None), TypeError,
     "focal_loss: gamma must be a real"),
    (lambda: layers.margin_ranking_loss(jnp.zeros(3), jnp.zeros(3), jnp.ones(3), margin=True), TypeError,
     "margin_ranking_loss: margin must be a real number, got bool True"),
    (lambda: layers.kl_div(jnp.zeros(3), jnp.zeros(3), log_target=1), TypeError,
     "kl_div: log_target must be a Python bool"),
    (lambda: layers.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1]), ignore_index=True), TypeError,
     "cross_entropy: ignore_index must be an int, got bool True"),
])
def test_scalar_options_of_the_wrong_type_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
