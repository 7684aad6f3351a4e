"""jaxnets.layers.pooling (and reshape.flatten) against PyTorch: forward and gradients, both layouts, 1D/2D/3D."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tolerances import FLOAT32
from jaxnets.layers.pooling import tiled_max_pool
from jaxnets.layers import (adaptive_avg_pool, avg_pool, conv_output_size, flatten, global_avg_pool, linear,
                            max_pool)

# float32 parity bound; pooling windows here sum at most 18 elements, so float32 rounding is far below it.
RTOL, ATOL = FLOAT32["rtol"], FLOAT32["atol"]

LAYOUT = {(1, True): "NWC", (2, True): "NHWC", (3, True): "NDHWC",
          (1, False): "NCW", (2, False): "NCHW", (3, False): "NCDHW"}
TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
TORCH_ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def to_last(a):  # [N, C, *S] -> [N, *S, C]
    return np.moveaxis(np.asarray(a), 1, -1)


def to_first(a):  # [N, *S, C] -> [N, C, *S]
    return np.moveaxis(np.asarray(a), -1, 1)


def jax_and_grad(f, x_t, gs):
    """Apply f(x, layout) -> tuple of outputs to a torch-layout array in BOTH layouts; return, per layout,
    the outputs and d(sum_i f_i(x) * g_i)/dx converted to torch layout. One jit (one compilation) per call."""
    n = x_t.ndim - 2

    def loss(x_last, x_first):
        ys_last, ys_first = f(x_last, LAYOUT[(n, True)]), f(x_first, LAYOUT[(n, False)])
        total = sum(jnp.sum(y * to_last(g)) for y, g in zip(ys_last, gs))
        total += sum(jnp.sum(y * g) for y, g in zip(ys_first, gs))
        return total, (ys_last, ys_first)

    (dx_last, dx_first), (ys_last, ys_first) = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
        to_last(x_t), x_t)
    return {"channels_last": ([to_first(y) for y in ys_last], to_first(dx_last)),
            "channels_first": ([np.asarray(y) for y in ys_first], np.asarray(dx_first))}


def torch_and_grad(f, x_t, rng):
    """Apply f -> tuple of outputs to a torch tensor; return outputs, random cotangents g_i and
    d(sum_i f_i(x) * g_i)/dx."""
    x = torch.tensor(x_t, requires_grad=True)
    ys = f(x)
    gs = [rng.standard_normal(tuple(y.shape), dtype=np.float32) for y in ys]
    sum((y * torch.tensor(g)).sum() for y, g in zip(ys, gs)).backward()
    return [y.detach().numpy() for y in ys], gs, x.grad.numpy()


def assert_parity(jax_fn, torch_fn, x_t, rng, names):
    """Outputs (named by `names`) and the input gradient of jax_fn equal torch_fn's, in both layouts."""
    ys_ref, gs, dx_ref = torch_and_grad(torch_fn, x_t, rng)
    for layout, (ys, dx) in jax_and_grad(jax_fn, x_t, gs).items():
        for name, y, y_ref in zip(names, ys, ys_ref, strict=True):
            assert y.shape == y_ref.shape, (name, layout)
            np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL, err_msg=f"{name}, {layout}")
        np.testing.assert_allclose(dx, dx_ref, rtol=RTOL, atol=ATOL, err_msg=f"gradient of {names}, {layout}")
    return [y.shape for y in ys_ref]


# (id, input spatial size, window, stride, padding, ceil_mode)
POOL_CASES = [
    ("1d_ceil_32_w3_s2", (32,), 3, 2, 0, True),  # 15 in floor mode, 16 in ceil mode
    ("1d_ceil_7_w2_s2_p1", (7,), 2, 2, 1, True),  # ceil would give 5; the last window would start in the padding
    ("1d_ceil_overhang", (8,), 3, 2, 1, True),  # last window covers x[7], the right pad and one extra pixel
    ("2d_stride_defaults_to_window", (8, 7), 2, None, 0, False),
    ("2d_tuples_ceil", (8, 7), (3, 2), (2, 1), (1, 0), True),
    ("2d_pad_overlap", (7, 6), 3, 2, 1, False),  # overlapping windows: max gradients accumulate
    ("3d_stride_defaults_to_window", (4, 6, 5), 2, None, 0, False),
    ("3d_ceil_pad", (5, 6, 7), (2, 3, 3), 2, (1, 1, 0), True),
]
POOL_OPS = ("max_pool", "avg_pool(count_include_pad=True)", "avg_pool(count_include_pad=False)")


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_matches_torch(case, rng):
    """max_pool and avg_pool with and without count_include_pad, both layouts, forward and gradient."""
    _, sizes, window, stride, padding, ceil_mode = case
    dim = len(sizes)
    x = rng.standard_normal((2, 3, *sizes), dtype=np.float32)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)

    def jax_fn(x, layout):
        return (max_pool(x, window, layout=layout, **kw),
                avg_pool(x, window, count_include_pad=True, layout=layout, **kw),
                avg_pool(x, window, count_include_pad=False, layout=layout, **kw))

    def torch_fn(x):
        return (TORCH_MAX[dim](x, window, **kw),
                TORCH_AVG[dim](x, window, count_include_pad=True, **kw),
                TORCH_AVG[dim](x, window, count_include_pad=False, **kw))

    shapes = assert_parity(jax_fn, torch_fn, x, rng, POOL_OPS)
    expected = conv_output_size(sizes, window, stride=window if stride is None else stride, padding=padding,
                                ceil_mode=ceil_mode)
    assert all(shape[2:] == expected for shape in shapes)


@pytest.mark.parametrize("pool", [max_pool, avg_pool])
def test_ceil_mode_sizes(pool):
    # The examples, each checked against what PyTorch itself computes.
    # Shapes only: eval_shape traces the real lax ops without compiling them.
    x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
    assert jax.eval_shape(lambda x: pool(x, 3, stride=2, ceil_mode=True), x).shape[1:3] == (16, 16)
    assert F.max_pool2d(torch.zeros(1, 1, 32, 32), 3, 2, ceil_mode=True).shape[2:] == (16, 16)
    # 7 with window 2, stride 2, padding 1: ceil((7 + 2 - 2) / 2) + 1 = 5 before PyTorch's rule, but that
    # 5th window would start at padded index 8 >= 7 + 1 (inside the right padding), so PyTorch gives 4.
    y = jax.eval_shape(lambda x: pool(x, 2, stride=2, padding=1, ceil_mode=True), jnp.zeros((1, 7, 1)))
    assert y.shape[1] == F.max_pool1d(torch.zeros(1, 1, 7), 2, 2, padding=1, ceil_mode=True).shape[-1] == 4


def test_avg_pool_ceil_divisor_by_hand():
    # size 8, window 3, stride 2, padding 1, ceil: 5 windows; the last covers x[7], one pad, one overhang.
    x = jnp.arange(1.0, 9.0).reshape(1, 8, 1)
    incl = avg_pool(x, 3, stride=2, padding=1, ceil_mode=True)[0, :, 0]
    excl = avg_pool(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)[0, :, 0]
    np.testing.assert_allclose(incl, [(0 + 1 + 2) / 3, (2 + 3 + 4) / 3, (4 + 5 + 6) / 3, (6 + 7 + 8) / 3,
                                      (8 + 0) / 2], rtol=1e-6)
    np.testing.assert_allclose(excl, [(1 + 2) / 2, 3.0, 5.0, 7.0, 8.0], rtol=1e-6)


ADAPTIVE_CASES = [
    ("1d_7_to_3", (7,), 3),
    ("1d_10_to_4", (10,), 4),
    ("1d_6_to_3_divisible", (6,), 3),
    ("1d_3_to_5_upsampling", (3,), 5),
    ("2d_7x10_to_3x4", (7, 10), (3, 4)),
    ("2d_none_keeps_size", (7, 10), (None, 4)),
    ("2d_to_1", (5, 6), 1),
    ("3d_5x7x6_to_2x3x4", (5, 7, 6), (2, 3, 4)),
]


@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=[c[0] for c in ADAPTIVE_CASES])
def test_adaptive_avg_pool_matches_torch(case, rng):
    _, sizes, out = case
    x = rng.standard_normal((2, 3, *sizes), dtype=np.float32)
    assert_parity(lambda x, layout: (adaptive_avg_pool(x, out, layout=layout),),
                  lambda x: (TORCH_ADAPTIVE[len(sizes)](x, out),), x, rng, ["adaptive_avg_pool"])


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("sizes", [(9,), (5, 6), (3, 4, 5)], ids=["1d", "2d", "3d"])
def test_global_avg_pool_matches_torch(sizes, keepdims, rng):
    x = rng.standard_normal((2, 3, *sizes), dtype=np.float32)
    dims = tuple(range(2, 2 + len(sizes)))
    if keepdims:  # then the output has the layout of x, as everywhere in jax_and_grad
        assert_parity(lambda x, layout: (global_avg_pool(x, layout=layout, keepdims=True),),
                      lambda x: (x.mean(dim=dims, keepdim=True),), x, rng, ["global_avg_pool"])
        return
    (y_ref,), (g,), dx_ref = torch_and_grad(lambda x: (x.mean(dim=dims),), x, rng)  # [N, C] in every layout
    for channels_last in (True, False):
        layout = LAYOUT[(len(sizes), channels_last)]
        y, vjp = jax.vjp(lambda x: global_avg_pool(x, layout=layout), jnp.asarray(to_last(x) if channels_last else x))
        (dx,) = vjp(jnp.asarray(g))
        np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(to_first(dx) if channels_last else dx, dx_ref, rtol=RTOL, atol=ATOL)


def test_jit_equals_eager(rng):
    x = jnp.asarray(rng.standard_normal((2, 9, 8, 3), dtype=np.float32))
    for f in (lambda x: max_pool(x, 3, stride=2, padding=1, ceil_mode=True),
              lambda x: avg_pool(x, (3, 2), stride=2, padding=(1, 0), ceil_mode=True, count_include_pad=False),
              lambda x: adaptive_avg_pool(x, (4, 3)),
              lambda x: global_avg_pool(x)):
        np.testing.assert_allclose(jax.jit(f)(x), f(x), rtol=1e-6, atol=0)  # fusion may reorder one rounding


def test_vmap(rng):
    xs = jnp.asarray(rng.standard_normal((3, 2, 7, 6, 2), dtype=np.float32))
    for f in (lambda x: max_pool(x, 2, padding=1), lambda x: avg_pool(x, 3, stride=2, ceil_mode=True),
              lambda x: adaptive_avg_pool(x, 3)):
        # a vmapped axis must behave like more batch: compare with the batch folded into N
        want = jax.jit(f)(xs.reshape(6, 7, 6, 2))
        got = jax.jit(jax.vmap(f))(xs)
        np.testing.assert_allclose(got, want.reshape(3, 2, *want.shape[1:]), rtol=RTOL, atol=ATOL)


def test_half_precision_keeps_dtype():
    x = jax.ShapeDtypeStruct((1, 6, 6, 2), jnp.bfloat16)
    for f in (lambda x: avg_pool(x, 2), lambda x: max_pool(x, 2), lambda x: adaptive_avg_pool(x, 4)):
        assert jax.eval_shape(f, x).dtype == jnp.bfloat16


def test_avg_pool_3d_accepts_input_smaller_than_window_when_padded(rng):
    # torch's avg_pool3d (not 1d/2d, nor max_pool3d) refuses an input smaller than the window even when
    # padding makes it fit; jaxnets follows the 1d/2d semantics, checked here against avg_pool1d.
    x = rng.standard_normal((2, 3, 1), dtype=np.float32)  # [N, C, T], T=1 < window 4
    want = F.avg_pool1d(torch.tensor(x), 4, padding=2, ceil_mode=True, count_include_pad=True).numpy()
    got = avg_pool(x[:, :, :, None, None], (4, 1, 1), padding=(2, 0, 0), ceil_mode=True, layout="NCDHW")
    np.testing.assert_allclose(got[..., 0, 0], want, rtol=RTOL, atol=ATOL)


# max_pool with stride = window and no padding takes the tiled path (a reshape into windows, pooling.py); ties
# (many after a ReLU) and NaN go where PyTorch sends them: the first maximum, or the window's last NaN.
TILED_CASES = [((9,), 2), ((8, 7), 2), ((6, 9), (3, 2)), ((4, 6, 5), 2)]  # odd sizes: floor mode drops a row


@pytest.mark.parametrize("sizes,window", TILED_CASES, ids=["1d", "2d", "2d_3x2", "3d"])
def test_tiled_max_pool_ties_and_nan_equal_torch_bitwise(sizes, window, rng):
    x = np.maximum(np.round(rng.standard_normal((2, 3, *sizes)), 0), 0).astype(np.float32)  # mostly ties at 0, 1
    x.reshape(-1)[rng.choice(x.size, 3, replace=False)] = np.nan
    dim = len(sizes)
    ys_ref, gs, dx_ref = torch_and_grad(lambda t: (TORCH_MAX[dim](t, window),), x, rng)
    for layout, (ys, dx) in jax_and_grad(lambda x, layout: (max_pool(x, window, layout=layout),), x, gs).items():
        np.testing.assert_array_equal(ys[0], ys_ref[0], err_msg=layout)  # NaN where torch has NaN
        np.testing.assert_array_equal(dx, dx_ref, err_msg=layout)


def test_tiled_max_pool_equals_reduce_window_and_has_no_select_and_scatter(rng):
    x = jnp.asarray(rng.standard_normal((4, 10, 10, 6), dtype=np.float32))  # no ties: both choose the same

    def value_and_grad():  # a new function each time: the switch is read at trace time
        return jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(max_pool(x, 2)))))

    got = value_and_grad()(x)
    with tiled_max_pool(False):
        want = value_and_grad()(x)
        assert "select_and_scatter" in value_and_grad().lower(x).as_text()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert "select_and_scatter" not in value_and_grad().lower(x).as_text()


def test_tiled_max_pool_integer_input():
    x = jnp.asarray([[3, -2, 5, 5, -9, -8, 7]], jnp.int32)[..., None]
    np.testing.assert_array_equal(max_pool(x, 2)[0, :, 0], [3, 5, -8])


def test_max_pool_integer_input():
    x = jnp.arange(-8, 8, dtype=jnp.int32).reshape(1, 16, 1)
    np.testing.assert_array_equal(max_pool(x, 3, stride=2, padding=1)[0, :, 0], [-7, -5, -3, -1, 1, 3, 5, 7])


# ---------------------------------------------------------------- flatten (jaxnets.layers.reshape)
@pytest.mark.parametrize("sizes", [(5,), (3, 4), (2, 3, 4)], ids=["1d", "2d", "3d"])
def test_flatten_is_torch_order_for_both_layouts(sizes, rng):
    x = rng.standard_normal((2, 3, *sizes), dtype=np.float32)
    want = torch.flatten(torch.tensor(x), 1).numpy()
    np.testing.assert_array_equal(flatten(to_last(x), layout=LAYOUT[(len(sizes), True)]), want)
    np.testing.assert_array_equal(flatten(x, layout=LAYOUT[(len(sizes), False)]), want)


def test_flatten_then_linear_takes_torch_weights_unchanged(rng):
    x = rng.standard_normal((2, 3, 4, 5), dtype=np.float32)  # NCHW
    w = rng.standard_normal((6, 60), dtype=np.float32)  # torch nn.Linear weight [out, in]
    want = F.linear(torch.flatten(torch.tensor(x), 1), torch.tensor(w)).numpy()
    np.testing.assert_allclose(linear(flatten(to_last(x)), w.T), want, rtol=RTOL, atol=ATOL)


def test_flatten_2d_is_identity():
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(flatten(x), x)


# ---------------------------------------------------------------- errors: one test per bad input
X = jnp.zeros((2, 5, 5, 3))  # NHWC


def test_pool_rejects_window_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"max_pool: the window size 7 is larger than the padded input along "
                                         r"spatial dim 0: 5 \+ 0 \+ 0 = 5"):
        max_pool(X, 7)


def test_pool_rejects_window_larger_than_padded_input_with_padding():
    with pytest.raises(ValueError, match=r"avg_pool: the window size 5 is larger than the padded input along "
                                         r"spatial dim 1: 2 \+ 1 \+ 1 = 4"):
        avg_pool(jnp.zeros((1, 9, 2, 1)), (3, 5), padding=(0, 1))


def test_pool_rejects_padding_above_half_window():
    with pytest.raises(ValueError, match=r"avg_pool: padding must be at most half the window .*got "
                                         r"padding=\(2, 2\) for window=\(3, 3\)"):
        avg_pool(X, 3, padding=2)


def test_pool_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"max_pool: expected a batched input of rank 3-D, 4-D, 5-D.*"
                                         r"got shape \(5, 3\)"):
        max_pool(jnp.zeros((5, 3)), 2)


def test_pool_rejects_unknown_layout():
    with pytest.raises(ValueError, match=r"avg_pool: unknown layout 'CHWN'"):
        avg_pool(X, 2, layout="CHWN")


def test_pool_rejects_non_positive_window():
    with pytest.raises(ValueError, match=r"max_pool: window must be >= 1, got 0"):
        max_pool(X, 0)


def test_pool_rejects_stride_of_wrong_length():
    with pytest.raises(ValueError, match=r"max_pool: stride must be an int or a tuple of 2 ints, got \(1, 1, 1\)"):
        max_pool(X, 2, stride=(1, 1, 1))


def test_pool_rejects_negative_padding():
    with pytest.raises(ValueError, match=r"avg_pool: padding must be >= 0, got -1"):
        avg_pool(X, 2, padding=-1)


def test_pool_rejects_float_window():
    with pytest.raises(TypeError, match=r"max_pool: window must be an int or a tuple of 2 ints, got 2.0"):
        max_pool(X, 2.0)


def test_pool_rejects_non_bool_ceil_mode():
    with pytest.raises(TypeError, match=r"max_pool: ceil_mode must be a Python bool .*got str 'yes'"):
        max_pool(X, 2, ceil_mode="yes")


def test_avg_pool_rejects_non_bool_count_include_pad():
    with pytest.raises(TypeError, match=r"avg_pool: count_include_pad must be a Python bool .*got NoneType None"):
        avg_pool(X, 2, count_include_pad=None)


def test_avg_pool_rejects_integer_input():
    with pytest.raises(TypeError, match=r"avg_pool: x must have a floating-point dtype for averaging, got int32"):
        avg_pool(jnp.zeros((1, 4, 1), jnp.int32), 2)
    with pytest.raises(TypeError, match=r"adaptive_avg_pool: x must have a floating-point dtype"):
        adaptive_avg_pool(jnp.zeros((1, 4, 1), jnp.int32), 2)


def test_adaptive_rejects_zero_output_size():
    with pytest.raises(ValueError, match=r"adaptive_avg_pool: output_size must be >= 1, got \(0, 2\)"):
        adaptive_avg_pool(X, (0, 2))


def test_adaptive_rejects_output_size_of_wrong_length():
    with pytest.raises(ValueError, match=r"adaptive_avg_pool: output_size must be an int or a tuple of 2 ints, "
                                         r"got \(2, 2, 2\)"):
        adaptive_avg_pool(X, (2, 2, 2))


def test_adaptive_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"adaptive_avg_pool: expected a batched input of rank"):
        adaptive_avg_pool(jnp.zeros((2, 2, 2, 2, 2, 2)), 1)


def test_global_avg_pool_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"global_avg_pool: expected a batched input of rank .*got shape \(2, 3\)"):
        global_avg_pool(jnp.zeros((2, 3)))


def test_global_avg_pool_rejects_unknown_layout():
    with pytest.raises(ValueError, match=r"global_avg_pool: unknown layout 'NHW'"):
        global_avg_pool(X, layout="NHW")


def test_flatten_rejects_rank_below_two():
    with pytest.raises(ValueError, match=r"flatten: expected a batched input \[N, \.\.\.\] of rank >= 2, "
                                         r"got shape \(4,\)"):
        flatten(jnp.zeros(4))


def test_flatten_rejects_unknown_layout():
    with pytest.raises(ValueError, match=r"flatten: unknown layout 'NCWH'"):
        flatten(X, layout="NCWH")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_pooling_under_strict_promotion_matches_torch(rng, dtype):
    """The suite runs with jax_numpy_dtype_promotion="strict" (conftest): half-precision averages must widen
    with checks.at_least_float32, not by implicit promotion. Sums in float32, so the result is the float32
    average rounded once to the half dtype: within one half-precision ulp of torch's (rtol 2^-7 for bf16)."""
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    x = rng.normal(size=(2, 3, 7, 7)).astype(np.float32)
    xh = jnp.asarray(x, dtype)
    th = torch.tensor(np.asarray(xh.astype(jnp.float32))).to(torch.bfloat16 if dtype == jnp.bfloat16
                                                             else torch.float16)
    tol = dict(rtol=2 ** -7 if dtype == jnp.bfloat16 else 2 ** -10, atol=1e-3)
    cases = [
        (lambda a: avg_pool(a, 3, stride=2, padding=1, layout="NCHW"),
         lambda t: F.avg_pool2d(t, 3, stride=2, padding=1)),
        (lambda a: adaptive_avg_pool(a, (3, 2), layout="NCHW"), lambda t: F.adaptive_avg_pool2d(t, (3, 2))),
        (lambda a: max_pool(a, 3, stride=2, padding=1, ceil_mode=True, layout="NCHW"),
         lambda t: F.max_pool2d(t, 3, stride=2, padding=1, ceil_mode=True)),
        (lambda a: global_avg_pool(a, layout="NCHW"), lambda t: t.float().mean(dim=(2, 3))),
    ]
    for ours, theirs in cases:
        y = ours(xh)
        assert y.dtype == dtype
        np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), theirs(th).float().numpy(), **tol)


@pytest.mark.parametrize("fn", [max_pool, avg_pool, adaptive_avg_pool])
@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}], ids=["str", "None", "dict"])
def test_pooling_rejects_non_array_input(fn, bad):
    with pytest.raises(TypeError, match=rf"{fn.__name__}: x must be an array"):
        fn(bad, 2)


def test_global_avg_pool_rejects_non_array_input():
    with pytest.raises(TypeError, match="global_avg_pool: x must be an array"):
        global_avg_pool("abc")


@pytest.mark.parametrize("bad", [1, None, True])
def test_pooling_non_string_layout_raises_type_error(bad):
    x = jnp.ones((1, 4, 4, 2))
    for fn in (lambda: max_pool(x, 2, layout=bad), lambda: avg_pool(x, 2, layout=bad),
               lambda: adaptive_avg_pool(x, 2, layout=bad), lambda: global_avg_pool(x, layout=bad),
               lambda: flatten(x, layout=bad)):
        with pytest.raises(TypeError, match="layout must be a string"):
            fn()
