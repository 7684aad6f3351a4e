"""jaxnets.layers.conv against PyTorch: forward and gradients, both layouts, 1D/2D/3D, every option."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tolerances import FLOAT32
from jaxnets.layers import conv, conv_output_size, linear

# float32 parity bound for all comparisons below. The longest reduction here is the kernel gradient of the
# 3-D cases (N * prod(out) = 2 * 60 products of O(1) terms), whose float32 rounding stays well under 1e-5.
RTOL, ATOL = FLOAT32["rtol"], FLOAT32["atol"]

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
SIZES = {1: (11,), 2: (7, 6), 3: (5, 4, 6)}
LAYOUT = {(1, True): "NWC", (2, True): "NHWC", (3, True): "NDHWC",
          (1, False): "NCW", (2, False): "NCHW", (3, False): "NCDHW"}


def to_last(a):  # [N, C, *S] -> [N, *S, C]
    return np.moveaxis(np.asarray(a), 1, -1)


def to_first(a):  # [N, *S, C] -> [N, C, *S]
    return np.moveaxis(np.asarray(a), -1, 1)


def kernel_to_last(w):  # torch [O, I, *K] -> [*K, I, O]
    n = w.ndim - 2
    return np.transpose(w, (*range(2, 2 + n), 1, 0))


def kernel_to_first(k):  # [*K, I, O] -> torch [O, I, *K]
    n = k.ndim - 2
    return np.transpose(np.asarray(k), (n + 1, n, *range(n)))


def torch_pad_arg(pairs):
    """F.pad takes (lo, hi) pairs starting from the LAST dimension."""
    return [v for lo_hi in reversed(pairs) for v in lo_hi]


def jax_conv_and_grads(x_t, w_t, b, g_t, **kw):
    """Run jaxnets conv on torch-layout numpy arrays in BOTH layouts (one jit, one compilation); return per
    layout the output and the grads of sum(y * g) for x, kernel (and bias), all converted to torch layout."""
    n = x_t.ndim - 2
    has_bias = b is not None

    def loss(x_last, k_last, x_first, k_first, *bias):
        y_last = conv(x_last, k_last, *bias, layout=LAYOUT[(n, True)], **kw)
        y_first = conv(x_first, k_first, *bias, layout=LAYOUT[(n, False)], **kw)
        return jnp.sum(y_last * to_last(g_t)) + jnp.sum(y_first * g_t), (y_last, y_first)

    args = (to_last(x_t), kernel_to_last(w_t), x_t, w_t) + ((b,) if has_bias else ())
    grads, (y_last, y_first) = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True))(*args)
    # the bias is shared by both layouts: its gradient is the sum of the two, each equal to torch's
    db = np.asarray(grads[4]) / 2 if has_bias else None
    return {"channels_last": (to_first(y_last), to_first(grads[0]), kernel_to_first(grads[1]), db),
            "channels_first": (np.asarray(y_first), np.asarray(grads[2]), np.asarray(grads[3]), db)}


def torch_conv_and_grads(x_t, w_t, b, g_t, *, pre_pad=None, **kw):
    x = torch.tensor(x_t, requires_grad=True)
    w = torch.tensor(w_t, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    xin = x if pre_pad is None else F.pad(x, torch_pad_arg(pre_pad))
    y = TORCH_CONV[x_t.ndim - 2](xin, w, bt, **kw)
    (y * torch.tensor(g_t)).sum().backward()
    return (y.detach().numpy(), x.grad.numpy(), w.grad.numpy(), None if b is None else bt.grad.numpy())


def lax_same_pads(sizes, kernel, stride, dilation):
    """Independent reference for SAME padding: JAX's own padtype_to_pads."""
    dilated = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    return [tuple(p) for p in jax.lax.padtype_to_pads(sizes, dilated, stride, "SAME")]


# (id, dim, C_in, C_out, kernel, bias, jaxnets kwargs, torch kwargs); "pre_pad" = F.pad before torch's conv.
CASES = [
    ("1d_basic", 1, 3, 4, (3,), True, {}, {}),
    ("1d_stride_pad_dilation", 1, 4, 6, (3,), True, dict(stride=2, padding=2, dilation=2),
     dict(stride=2, padding=2, dilation=2)),
    ("1d_asymmetric_pair", 1, 3, 2, (3,), False, dict(padding=((1, 3),)), dict(pre_pad=[(1, 3)])),
    ("1d_same_even_dilated", 1, 2, 3, (4,), True, dict(padding="SAME", dilation=2),
     dict(padding="same", dilation=2)),
    ("2d_tuples", 2, 3, 4, (3, 2), True, dict(stride=(2, 1), padding=(1, 1)), dict(stride=(2, 1), padding=(1, 1))),
    ("2d_asymmetric_pairs", 2, 3, 4, (3, 3), False, dict(stride=2, padding=((0, 2), (1, 0))),
     dict(stride=2, pre_pad=[(0, 2), (1, 0)])),
    ("2d_dilation", 2, 2, 3, (3, 3), True, dict(dilation=(2, 1), padding=2), dict(dilation=(2, 1), padding=2)),
    ("2d_groups", 2, 4, 6, (3, 3), True, dict(groups=2, padding=1), dict(groups=2, padding=1)),
    ("2d_depthwise", 2, 4, 8, (3, 3), True, dict(groups=4, padding=1, stride=2),
     dict(groups=4, padding=1, stride=2)),
    ("2d_1x1", 2, 5, 3, (1, 1), True, dict(stride=2), dict(stride=2)),
    # one input channel: on CPU the forward pass is computed by taps (layers/conv_formulations.py)
    ("2d_one_input_channel", 2, 1, 6, (5, 5), True, dict(padding=2), dict(padding=2)),
    ("1d_one_input_channel_strided", 1, 1, 3, (4,), False, dict(stride=3, padding=1), dict(stride=3, padding=1)),
    ("2d_same_lowercase", 2, 3, 2, (3, 4), True, dict(padding="same"), dict(padding="same")),
    ("2d_valid", 2, 3, 2, (3, 3), True, dict(padding="VALID"), dict(padding="valid")),
    ("2d_same_stride2", 2, 3, 4, (3, 3), True, dict(padding="SAME", stride=2),
     dict(stride=2, pre_pad=lax_same_pads((7, 6), (3, 3), (2, 2), (1, 1)))),
    ("2d_same_stride2_dilated", 2, 2, 2, (2, 3), False, dict(padding="Same", stride=(2, 3), dilation=(2, 1)),
     dict(stride=(2, 3), dilation=(2, 1), pre_pad=lax_same_pads((7, 6), (2, 3), (2, 3), (2, 1)))),
    ("3d_basic", 3, 2, 3, (3, 3, 3), True, dict(padding=1), dict(padding=1)),
    ("3d_mixed_padding_groups", 3, 4, 2, (2, 3, 2), True,
     dict(stride=(1, 2, 2), dilation=(1, 1, 2), groups=2, padding=(1, (2, 0), 0)),
     dict(stride=(1, 2, 2), dilation=(1, 1, 2), groups=2, pre_pad=[(1, 1), (2, 0), (0, 0)])),
    ("3d_same", 3, 2, 2, (2, 3, 2), False, dict(padding="SAME"), dict(padding="same")),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on its own even-kernel copy
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv_matches_torch(case, rng):
    _, dim, c_in, c_out, ksize, has_bias, jkw, tkw = case
    groups = jkw.get("groups", 1)
    x = rng.standard_normal((2, c_in, *SIZES[dim]), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in // groups, *ksize), dtype=np.float32)
    b = rng.standard_normal((c_out,), dtype=np.float32) if has_bias else None
    ref = torch_conv_and_grads(x, w, b, np.zeros(1, np.float32), **tkw)  # only for the output shape
    g = rng.standard_normal(ref[0].shape, dtype=np.float32)  # random cotangent
    ref = torch_conv_and_grads(x, w, b, g, **tkw)
    for layout, out in jax_conv_and_grads(x, w, b, g, **jkw).items():
        for name, got, want in zip(("y", "dx", "dkernel", "dbias"), out, ref):
            if want is None:
                assert got is None
                continue
            assert got.shape == want.shape, (layout, name)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name}, {layout}")
    # the shape formula agrees with the actual output shape
    expected = conv_output_size(SIZES[dim], ksize, stride=jkw.get("stride", 1), padding=jkw.get("padding", 0),
                                dilation=jkw.get("dilation", 1))
    assert ref[0].shape[2:] == expected


def test_same_padding_gives_ceil_size_over_stride():
    x = jnp.zeros((1, 7, 6, 1))
    for stride in (1, 2, 3):
        y = conv(x, jnp.zeros((4, 3, 1, 1)), padding="SAME", stride=stride, dilation=2)
        assert y.shape[1:3] == (-(-7 // stride), -(-6 // stride))


@pytest.mark.parametrize("size,kernel,kw,want", [
    (32, 3, dict(stride=2, ceil_mode=True), 16),
    (32, 3, dict(stride=2), 15),
    (7, 2, dict(stride=2, padding=1, ceil_mode=True), 4),  # the last window would start in the right padding
    (8, 3, dict(stride=3, ceil_mode=True), 3),
    (7, 3, dict(padding=(2, 0)), 7),
    (10, 3, dict(dilation=3, stride=2), 2),
    ((7, 8), (3, 1), dict(padding=((1, 2), 0)), (8, 8)),
    ((7, 8), 3, dict(stride=2, padding="SAME"), (4, 4)),
    ((7, 8), 3, dict(padding="valid"), (5, 6)),
])
def test_conv_output_size_values(size, kernel, kw, want):
    assert conv_output_size(size, kernel, **kw) == want


def test_conv_output_size_matches_torch_pool_ceil_rule():
    # PyTorch computes these shapes itself (aten pooling_output_shape): compare over a grid.
    for size in range(2, 12):
        for k in (2, 3):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    if size + 2 * p < k:
                        continue  # both raise: see the error tests
                    want = F.max_pool1d(torch.zeros(1, 1, size), k, s, padding=p, ceil_mode=True).shape[-1]
                    assert conv_output_size(size, k, stride=s, padding=p, ceil_mode=True) == want, (size, k, s, p)


def test_jit_equals_eager(rng):
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 4), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 2, 6), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((6,), dtype=np.float32))

    def f(x, k, b):
        return conv(x, k, b, stride=2, padding=((1, 0), 1), groups=2)

    np.testing.assert_array_equal(jax.jit(f)(x, k, b), f(x, k, b))


def test_vmap_over_inputs_and_kernels(rng):
    xs = jnp.asarray(rng.standard_normal((3, 2, 6, 5, 2), dtype=np.float32))
    ks = jnp.asarray(rng.standard_normal((3, 3, 3, 2, 4), dtype=np.float32))
    got = jax.vmap(lambda x, k: conv(x, k, padding=1))(xs, ks)
    want = jnp.stack([conv(x, k, padding=1) for x, k in zip(xs, ks)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_dtype_promotion():
    y = conv(jnp.ones((1, 5, 1), jnp.bfloat16), jnp.ones((3, 1, 1), jnp.float32))
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_matches_torch(has_bias, rng):
    x = rng.standard_normal((2, 3, 5), dtype=np.float32)
    w = rng.standard_normal((4, 5), dtype=np.float32)  # torch [out, in]
    b = rng.standard_normal((4,), dtype=np.float32) if has_bias else None
    g = rng.standard_normal((2, 3, 4), dtype=np.float32)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    yt = F.linear(xt, wt, bt)
    (yt * torch.tensor(g)).sum().backward()
    args = (x, w.T) if b is None else (x, w.T, b)
    y = linear(*args)
    grads = jax.grad(lambda *a: jnp.sum(linear(*a) * g), argnums=tuple(range(len(args))))(*args)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grads[0], xt.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grads[1], wt.grad.numpy().T, rtol=RTOL, atol=ATOL)
    if b is not None:
        np.testing.assert_allclose(grads[2], bt.grad.numpy(), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- errors: one test per bad input
X = jnp.zeros((2, 7, 7, 4))  # NHWC
K = jnp.zeros((3, 3, 4, 6))  # HWIO


def test_conv_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"conv: expected a batched input of rank 3-D, 4-D, 5-D.*got shape \(7, 4\)"):
        conv(jnp.zeros((7, 4)), K)


def test_conv_rejects_kernel_rank_mismatch():
    with pytest.raises(ValueError, match=r"conv: kernel must have the rank of x \(4-D.*got kernel shape \(3, 4, 6\)"):
        conv(X, jnp.zeros((3, 4, 6)))


def test_conv_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"conv: x has 4 channels but the kernel .* expects 3 per group"):
        conv(X, jnp.zeros((3, 3, 3, 6)))


def test_conv_rejects_channel_mismatch_with_groups():
    with pytest.raises(ValueError, match=r"conv: x has 4 channels but .* expects 4 per group x groups=2 = 8"):
        conv(X, K, groups=2)


def test_conv_rejects_channels_first_mismatch():
    with pytest.raises(ValueError, match=r"conv: x has 4 channels .*layout NCHW"):
        conv(jnp.zeros((2, 4, 7, 7)), jnp.zeros((6, 3, 3, 3)), layout="NCHW")


def test_conv_rejects_groups_not_dividing_input_channels():
    with pytest.raises(ValueError, match=r"conv: groups=3 does not divide the 4 input channels"):
        conv(X, jnp.zeros((3, 3, 1, 6)), groups=3)


def test_conv_rejects_groups_not_dividing_output_channels():
    with pytest.raises(ValueError, match=r"conv: groups=4 does not divide the 6 output channels"):
        conv(X, jnp.zeros((3, 3, 1, 6)), groups=4)


def test_conv_rejects_bad_groups():
    with pytest.raises(ValueError, match=r"conv: groups must be an int >= 1, got 0"):
        conv(X, K, groups=0)
    with pytest.raises(TypeError, match=r"conv: groups must be an int >= 1, got float 2.0"):
        conv(X, K, groups=2.0)


def test_conv_rejects_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"conv: the kernel size 9 is larger than the padded input along spatial "
                                         r"dim 0: 7 \+ 0 \+ 0 = 7"):
        conv(X, jnp.zeros((9, 3, 4, 6)))


def test_conv_rejects_dilated_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"conv: the kernel size 9 \(kernel 3 dilated by 4\) is larger than the "
                                         r"padded input along spatial dim 1: 7 \+ 1 \+ 0 = 8"):
        conv(X, K, dilation=(1, 4), padding=(1, (1, 0)))


def test_conv_rejects_bad_bias_shape():
    with pytest.raises(ValueError, match=r"conv: bias must have shape \(6,\) \(= C_out\), got \(4,\)"):
        conv(X, K, jnp.zeros(4))


def test_conv_rejects_unknown_layout():
    with pytest.raises(ValueError, match=r"conv: unknown layout 'NHCW'"):
        conv(X, K, layout="NHCW")


def test_conv_rejects_unknown_padding_string():
    with pytest.raises(ValueError, match=r"conv: padding must be .*'SAME'/'VALID', got 'FULL'"):
        conv(X, K, padding="FULL")


def test_conv_rejects_padding_of_wrong_length():
    with pytest.raises(ValueError, match=r"conv: padding must be .* for this 2-D input, got \(1, 1, 1\) of length 3"):
        conv(X, K, padding=(1, 1, 1))


def test_conv_rejects_malformed_padding_entry():
    with pytest.raises(ValueError, match=r"conv: padding must be .*entry \(1, 2, 3\) .* is neither an int nor"):
        conv(X, K, padding=((1, 2, 3), 1))


def test_conv_rejects_negative_padding():
    with pytest.raises(ValueError, match=r"conv: padding must be >= 0 \(no cropping\), got \(\(0, -1\), 0\)"):
        conv(X, K, padding=((0, -1), 0))


def test_conv_rejects_padding_of_wrong_type():
    with pytest.raises(TypeError, match=r"conv: padding must be .*got float 1.5"):
        conv(X, K, padding=1.5)


def test_conv_rejects_bad_stride():
    with pytest.raises(ValueError, match=r"conv: stride must be >= 1, got \(1, 0\)"):
        conv(X, K, stride=(1, 0))


def test_conv_rejects_bad_dilation():
    with pytest.raises(ValueError, match=r"conv: dilation must be an int or a tuple of 2 ints, got \(1, 1, 1\)"):
        conv(X, K, dilation=(1, 1, 1))


def test_conv_output_size_rejects_kernel_too_large():
    with pytest.raises(ValueError, match=r"conv_output_size: the kernel size 5 is larger than the padded input "
                                         r"along spatial dim 0: 3 \+ 0 \+ 1 = 4"):
        conv_output_size(3, 5, padding=(0, 1))


def test_conv_output_size_rejects_bad_ceil_mode():
    with pytest.raises(TypeError, match=r"conv_output_size: ceil_mode must be a Python bool .*got int 1"):
        conv_output_size(7, 3, ceil_mode=1)


def test_linear_rejects_feature_mismatch():
    with pytest.raises(ValueError, match=r"linear: x must have shape \[\.\.\., 5\] .* got \(2, 4\)"):
        linear(jnp.zeros((2, 4)), jnp.zeros((5, 3)))


def test_linear_rejects_kernel_rank():
    with pytest.raises(ValueError, match=r"linear: kernel must be 2-D \[in, out\], got shape \(5,\)"):
        linear(jnp.zeros((2, 5)), jnp.zeros((5,)))


def test_linear_rejects_bad_bias_shape():
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(3,\) \(= out\), got \(5,\)"):
        linear(jnp.zeros((2, 5)), jnp.zeros((5, 3)), jnp.zeros(5))


# ---- inputs smaller than the kernel: the explicit-padding path (an XLA CPU speed fix, same numbers) ----
conv_module = importlib.import_module("jaxnets.layers.conv")


def _loss_and_grads(x, k, g, kw, *, explicit: bool, monkeypatch):
    """conv output and the grads of sum(y * g) wrt x and kernel, with the explicit-padding path on or off."""
    def loss(x, k):
        y = conv(x, k, **kw)
        return jnp.sum(y * g), y

    with conv_module.explicit_padding(explicit):  # read at trace time
        (dx, dk), y = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(x, k)
    return y, dx, dk


# (sizes, kernel, options): every case has a spatial size smaller than the (dilated) kernel somewhere.
SMALL_CASES = [
    ((2,), (3,), dict(padding=1)),
    ((1,), (3,), dict(padding=(2,), stride=2)),
    ((3,), (2,), dict(padding=((3, 1),), dilation=3, stride=2)),  # low padding > extent - 1
    ((2, 2), (3, 3), dict(padding=1)),                            # CIFAR VGG's last convs
    ((2, 5), (3, 3), dict(padding=(1, 0), stride=(1, 2))),        # only one dim small
    ((3, 2), (3, 3), dict(padding=2, stride=2, dilation=(1, 2))),
    ((2, 2), (3, 3), dict(padding="SAME", groups=2)),
    ((2, 3), (3, 3), dict(padding=((2, 0), (1, 1)), groups=4, stride=(2, 1))),  # depthwise
    ((2, 1, 3), (3, 3, 2), dict(padding=1)),
    ((1, 2, 2), (2, 3, 3), dict(padding=(1, 1, (2, 1)), stride=(1, 2, 1), dilation=(1, 1, 2), groups=2)),
]


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "channels_first"])
@pytest.mark.parametrize("sizes,ksize,kw", SMALL_CASES, ids=[f"{c[0]}_{c[1]}_{i}" for i, c in enumerate(SMALL_CASES)])
def test_small_input_path_equals_the_plain_conv(sizes, ksize, kw, channels_last, rng, monkeypatch):
    """Forward and both gradients of the explicit-padding path equal the plain lax conv's (1e-5)."""
    n, groups, c_in, c_out = len(sizes), kw.get("groups", 1), 4, 8
    x = rng.standard_normal((3, *sizes, c_in) if channels_last else (3, c_in, *sizes), dtype=np.float32)
    k = rng.standard_normal((*ksize, c_in // groups, c_out) if channels_last else (c_out, c_in // groups, *ksize),
                            dtype=np.float32)
    kw = dict(kw, layout=LAYOUT[(n, channels_last)])
    y_plain = jax.eval_shape(lambda x, k: conv(x, k, **kw), x, k)
    g = rng.standard_normal(y_plain.shape, dtype=np.float32)
    want = _loss_and_grads(x, k, g, kw, explicit=False, monkeypatch=monkeypatch)
    got = _loss_and_grads(x, k, g, kw, explicit=True, monkeypatch=monkeypatch)
    for name, a, b in zip(("y", "dx", "dkernel"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)
    assert np.abs(np.asarray(want[1])).max() > 0.1  # a non-trivial data gradient was compared


def _uses_explicit_padding(x_shape, k_shape, **kw) -> bool:
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, k: jnp.sum(conv(x, k, **kw))))(jnp.ones(x_shape),
                                                                                  jnp.ones(k_shape)))
    return "optimization_barrier" in jaxpr


def test_explicit_padding_only_for_inputs_smaller_than_the_kernel():
    assert _uses_explicit_padding((1, 2, 2, 3), (3, 3, 3, 4), padding=1)
    assert _uses_explicit_padding((1, 4, 2, 3), (3, 3, 3, 4), padding=1)      # one dim small is enough
    assert _uses_explicit_padding((1, 3, 3, 3), (2, 2, 3, 4), padding=1, dilation=3)  # dilated extent 4
    assert not _uses_explicit_padding((1, 4, 4, 3), (3, 3, 3, 4), padding=1)  # ResNet's 4x4 maps: plain conv
    assert not _uses_explicit_padding((1, 3, 3, 3), (3, 3, 3, 4), padding=1)  # size == kernel: plain conv


def test_small_input_matches_torch(rng):
    """Parity with torch on the VGG shape (2x2 map, 3x3 kernel, padding 1), both layouts, with bias."""
    x = rng.standard_normal((2, 6, 2, 2), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    b = rng.standard_normal((4,), dtype=np.float32)
    g = rng.standard_normal((2, 4, 2, 2), dtype=np.float32)
    ref = torch_conv_and_grads(x, w, b, g, padding=1, groups=2)
    for layout, out in jax_conv_and_grads(x, w, b, g, padding=1, groups=2).items():
        for name, got, want in zip(("y", "dx", "dkernel", "dbias"), out, ref):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name}, {layout}")


def test_small_input_path_under_vmap_and_second_order(rng, monkeypatch):
    """vmap and grad-of-grad go through the custom derivative and agree with the plain conv."""
    xs = jnp.asarray(rng.standard_normal((2, 3, 2, 2, 4), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 4, 5), dtype=np.float32))

    def run(explicit):
        with conv_module.explicit_padding(explicit):
            batched = jax.vmap(lambda x: conv(x, k, padding=1))(xs)
            hvp = jax.grad(lambda k: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, k, padding=1))))(xs[0]) ** 2))(k)
        return batched, hvp

    for a, b in zip(run(True), run(False)):
        # second-order values reach ~100 here: float32 rounding of different summation orders is ~1e-6 of that
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL * float(np.abs(b).max()))


def test_small_input_path_keeps_low_precision_dtype(rng):
    x = jnp.asarray(rng.standard_normal((2, 2, 2, 4)), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((3, 3, 4, 4)), jnp.bfloat16)
    dx, dk = jax.grad(lambda x, k: jnp.sum(conv(x, k, padding=1).astype(jnp.float32)), argnums=(0, 1))(x, k)
    assert conv(x, k, padding=1).dtype == dx.dtype == dk.dtype == jnp.bfloat16


@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}], ids=["str", "None", "dict"])
def test_conv_and_linear_reject_non_array_inputs(bad):
    with pytest.raises(TypeError, match="conv: x must be an array"):
        conv(bad, K)
    with pytest.raises(TypeError, match="conv: kernel must be an array"):
        conv(X, bad)
    with pytest.raises(TypeError, match="linear: x must be an array"):
        linear(bad, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="linear: kernel must be an array"):
        linear(np.ones((2, 4), np.float32), bad)
    if bad is not None:  # None is "no bias"
        with pytest.raises(TypeError, match="linear: bias must be an array"):
            linear(np.ones((2, 4), np.float32), np.ones((4, 3), np.float32), bad)


@pytest.mark.parametrize("bad", [1, True, ("N", "H")])
def test_conv_non_string_layout_raises_type_error(bad):
    with pytest.raises(TypeError, match="conv: layout must be a string"):
        conv(X, K, layout=bad)


def test_conv_padding_entry_of_the_wrong_type_raises_type_error():
    with pytest.raises(TypeError, match=r"conv: padding must be .*entry 1.5 .* is neither an int nor"):
        conv(X, K, padding=(1.5, 1))


def test_linear_mixed_dtypes_promote_under_strict_promotion():
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    y = linear(jnp.ones((2, 5), jnp.bfloat16), jnp.ones((5, 3), jnp.float32), jnp.ones(3, jnp.bfloat16))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, np.full((2, 3), 6.0, np.float32))
