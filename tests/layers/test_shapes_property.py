"""Property tests: `conv_output_size` is the output shape of `conv`, `max_pool` and `avg_pool`, and PyTorch's.

Shapes of the jaxnets functions are taken with `jax.eval_shape`, which runs the real lax shape rules of
`conv_general_dilated`/`reduce_window` (what a compiled call returns) without compiling anything, so
hypothesis can try many configurations quickly. PyTorch computes its own shapes on tiny zero tensors.
"""
import jax
import jax.numpy as jnp
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxnets.layers import avg_pool, conv, conv_output_size, max_pool

LAYOUT = {(1, True): "NWC", (2, True): "NHWC", (3, True): "NDHWC",
          (1, False): "NCW", (2, False): "NCHW", (3, False): "NCDHW"}
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
N, C_IN, C_OUT = 1, 2, 3


def per_dim(dim, values):
    return st.tuples(*[values] * dim)


@st.composite
def conv_configs(draw):
    dim = draw(st.integers(1, 3))
    sizes = draw(per_dim(dim, st.integers(1, 9)))
    kernel = draw(per_dim(dim, st.integers(1, 4)))
    stride = draw(per_dim(dim, st.integers(1, 3)))
    dilation = draw(per_dim(dim, st.integers(1, 3)))
    pair = st.tuples(st.integers(0, 3), st.integers(0, 3))
    padding = draw(st.one_of(st.integers(0, 3), per_dim(dim, st.integers(0, 3)), per_dim(dim, pair),
                             st.sampled_from(["SAME", "VALID", "same"])))
    return sizes, kernel, stride, dilation, padding, draw(st.booleans())


@settings(max_examples=30, deadline=None)
@given(conv_configs())
def test_conv_output_size_is_the_conv_output_shape(config):
    sizes, kernel, stride, dilation, padding, channels_last = config
    dim = len(sizes)
    x_shape = (N, *sizes, C_IN) if channels_last else (N, C_IN, *sizes)
    k_shape = (*kernel, C_IN, C_OUT) if channels_last else (C_OUT, C_IN, *kernel)

    def run():
        x, k = jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(k_shape, jnp.float32)
        y = jax.eval_shape(lambda x, k: conv(x, k, stride=stride, padding=padding, dilation=dilation,
                                             layout=LAYOUT[(dim, channels_last)]), x, k)
        return y.shape[1:-1] if channels_last else y.shape[2:]

    try:
        expected = conv_output_size(sizes, kernel, stride=stride, padding=padding, dilation=dilation)
    except ValueError:  # the kernel does not fit: conv must refuse with the same reason
        with pytest.raises(ValueError, match="conv: the kernel size .* is larger than the padded input"):
            run()
        return
    assert run() == expected
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            assert expected == tuple(-(-s // st_) for s, st_ in zip(sizes, stride))
        return  # PyTorch has padding="same" only for stride 1; the parity tests cover it
    if isinstance(padding, int):
        pairs = [(padding, padding)] * dim
    else:
        pairs = [(p, p) if isinstance(p, int) else p for p in padding]
    x = F.pad(torch.zeros(N, C_IN, *sizes), [v for pair in reversed(pairs) for v in pair])
    y = TORCH_CONV[dim](x, torch.zeros(C_OUT, C_IN, *kernel), stride=stride, dilation=dilation)
    assert tuple(y.shape[2:]) == expected


@st.composite
def pool_configs(draw):
    dim = draw(st.integers(1, 3))
    sizes = draw(per_dim(dim, st.integers(1, 9)))
    window = draw(per_dim(dim, st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), per_dim(dim, st.integers(1, 3))))
    padding = tuple(draw(st.integers(0, w // 2)) for w in window)  # PyTorch's padding <= window // 2
    return sizes, window, stride, padding, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=30, deadline=None)
@given(pool_configs())
def test_conv_output_size_is_the_pool_output_shape(config):
    sizes, window, stride, padding, ceil_mode, channels_last = config
    dim = len(sizes)
    x = jax.ShapeDtypeStruct((N, *sizes, C_IN) if channels_last else (N, C_IN, *sizes), jnp.float32)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, layout=LAYOUT[(dim, channels_last)])

    def shapes():
        for pool in (max_pool, avg_pool):
            y = jax.eval_shape(lambda x: pool(x, window, **kw), x)
            yield y.shape[1:-1] if channels_last else y.shape[2:]

    try:
        expected = conv_output_size(sizes, window, stride=window if stride is None else stride, padding=padding,
                                    ceil_mode=ceil_mode)
    except ValueError:  # the window does not fit: both pools must refuse with the same reason
        for pool in (max_pool, avg_pool):
            with pytest.raises(ValueError, match=f"{pool.__name__}: the window size .* is larger than the padded"):
                jax.eval_shape(lambda x: pool(x, window, **kw), x)
        return
    assert list(shapes()) == [expected, expected]
    torch_kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    for pool in (TORCH_MAX[dim], TORCH_AVG[dim]):
        if pool is F.avg_pool3d and any(s < w for s, w in zip(sizes, window)):
            continue  # torch's avg_pool3d alone refuses inputs smaller than the window, padding ignored
        assert tuple(pool(torch.zeros(N, C_IN, *sizes), window, **torch_kw).shape[2:]) == expected


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.integers(1, 4), st.integers(0, 4), st.integers(1, 3),
       st.booleans())
def test_conv_output_size_tuple_is_per_dim(size, kernel, stride, pad, dilation, ceil_mode):
    kw = dict(stride=stride, dilation=dilation, ceil_mode=ceil_mode)
    try:
        one = conv_output_size(size, kernel, padding=(pad, 1), **kw)
    except ValueError:
        with pytest.raises(ValueError, match="conv_output_size: the kernel size"):
            conv_output_size((size, size + 13), kernel, padding=((pad, 1), 0), **kw)
        return
    pair = conv_output_size((size, size + 13), kernel, padding=((pad, 1), 0), **kw)
    assert pair[0] == one
    assert pair[1] == conv_output_size(size + 13, kernel, padding=0, **kw)  # 13 >= any dilated kernel
