"""jaxnets.init against PyTorch: fans and gains equal torch.nn.init's, sample moments equal the formulas.

Statistical tolerance (every moment check below): a sample of n i.i.d. values with mean 0 and variance v has
- standard error of the mean sqrt(v / n);
- standard error of the second moment mean(x^2) equal to v * sqrt((kurtosis - 1) / n): v * sqrt(2 / n) for
  a normal (kurtosis 3); the uniform (1.8) and the normal truncated at 2 std (~2.4) have lighter tails, so
  v * sqrt(2 / n) bounds them too.
We accept 6 standard errors (a false alarm has probability ~2e-9 per check; seeds are fixed anyway). With
n = 165888 the variance is then checked to within 2.1%, while a wrong fan or
layout changes it by a factor of 2 or more in these shapes (fan_in != fan_out != fan_avg everywhere).
"""
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import init

N_SIGMA = 6.0
TRUNC_STD = .87962566103423978

# PyTorch-shaped (OI*) kernels; each is also tested channels-last, transposed to [*spatial, I, O]. All have
# N = 165888 elements: the initializers draw flat samples, so JAX compiles one sampler per distribution.
N = 165_888
OIHW_SHAPES = {
    "dense": (576, 288),             # torch.nn.Linear(288, 576).weight
    "conv1d": (384, 144, 3),
    "conv2d": (192, 96, 3, 3),
    "conv3d": (96, 64, 3, 3, 3),
    "grouped": (288, 64, 3, 3),      # Conv2d(256, 288, 3, groups=4): the kernel stores 256 / 4 inputs
}
assert all(math.prod(s) == N for s in OIHW_SHAPES.values())


@pytest.fixture(autouse=True, scope="module")
def _torch_seed_and_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def to_hwio(oihw):
    """[O, I, *spatial] -> [*spatial, I, O] (shape or array)."""
    if isinstance(oihw, tuple):
        return oihw[2:] + (oihw[1], oihw[0])
    return np.transpose(oihw, tuple(range(2, oihw.ndim)) + (1, 0))


def layout_shape(name, layout):
    oihw = OIHW_SHAPES[name]
    return oihw if layout == "OIHW" else to_hwio(oihw)


def torch_fans(oihw):
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(oihw))


def assert_moments(x, var):
    """Mean 0 and second moment `var` within N_SIGMA standard errors (see the module docstring)."""
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    assert abs(x.mean()) <= N_SIGMA * math.sqrt(var / n), (x.mean(), var, n)
    assert abs(np.mean(x ** 2) - var) <= N_SIGMA * var * math.sqrt(2.0 / n), (np.mean(x ** 2), var, n)


def assert_fills_uniform(x, bound):
    """Samples of U(-bound, bound): never outside, and (n >= 18k) min/max within 1% of -+bound."""
    x = np.asarray(x, np.float64)
    assert x.size >= 18_000  # P(max < 0.99 b) = 0.995^n < 1e-39
    assert x.max() <= bound and x.min() >= -bound, (x.min(), x.max(), bound)
    assert x.max() >= 0.99 * bound and x.min() <= -0.99 * bound, (x.min(), x.max(), bound)


# ---------------------------------------------------------------- compute_fans / calculate_gain


FAN_SHAPES = [(7, 5), (8, 3, 5), (16, 8, 3, 5), (12, 4, 3, 3), (16, 8, 3, 5, 2), (6, 4, 2, 3, 2, 2), (3, 0, 2)]


@pytest.mark.parametrize("oihw", FAN_SHAPES)
def test_compute_fans_matches_torch(oihw):
    expected = torch_fans(oihw)
    assert init.compute_fans(oihw, kernel_layout="OIHW") == expected
    assert init.compute_fans(to_hwio(oihw), kernel_layout="HWIO") == expected
    assert init.compute_fans(to_hwio(oihw)) == expected  # HWIO family is the default


def test_compute_fans_grouped_conv():
    # Conv2d(64, 32, 3, groups=4): weight [32, 16, 3, 3]; fan_in per group = 16 * 9, fan_out = 32 * 9.
    conv = torch.nn.Conv2d(64, 32, 3, groups=4)
    assert init.compute_fans(tuple(conv.weight.shape), kernel_layout="OIHW") == (16 * 9, 32 * 9)
    assert init.compute_fans(tuple(conv.weight.shape), kernel_layout="OIHW") == torch_fans(tuple(conv.weight.shape))
    assert init.compute_fans((3, 3, 16, 32)) == (16 * 9, 32 * 9)


@pytest.mark.parametrize("layout", ["IO", "WIO", "HWIO", "DHWIO", "OI", "OIW", "OIHW", "OIDHW"])
def test_compute_fans_layout_names_a_family(layout):
    # Rank picks the member: any name of the family gives the same fans for any rank.
    for oihw in FAN_SHAPES[:5]:
        shape = to_hwio(oihw) if layout.endswith("IO") else oihw
        assert init.compute_fans(shape, kernel_layout=layout) == torch_fans(oihw)


def test_compute_fans_accepts_numpy_ints():
    assert init.compute_fans(tuple(np.array([3, 3, 4, 8]))) == (36, 72)


GAIN_CASES = [("linear", None), ("conv1d", None), ("conv2d", None), ("conv3d", None), ("conv_transpose1d", None),
              ("conv_transpose2d", None), ("conv_transpose3d", None), ("sigmoid", None), ("tanh", None),
              ("relu", None), ("selu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0.0),
              ("leaky_relu", 3), ("leaky_relu", math.sqrt(5)), ("relu", 0.5)]


@pytest.mark.parametrize("nonlinearity,param", GAIN_CASES)
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == torch.nn.init.calculate_gain(nonlinearity, param)


def test_calculate_gain_table_covers_torch():
    from jaxnets.init.fans import NONLINEARITIES
    assert set(NONLINEARITIES) == {n for n, _ in GAIN_CASES}


# ---------------------------------------------------------------- variance_scaling


def expected_variance(scale, mode, oihw):
    fan_in, fan_out = torch_fans(oihw)
    return scale / {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("name", ["dense", "conv2d"])
def test_variance_scaling_moments(key, layout, mode, distribution, name):
    shape = layout_shape(name, layout)
    var = expected_variance(2.0, mode, OIHW_SHAPES[name])
    x = init.variance_scaling(2.0, mode=mode, distribution=distribution, kernel_layout=layout)(key, shape)
    assert x.shape == shape and x.dtype == jnp.float32
    assert_moments(x, var)
    if distribution == "uniform":
        assert_fills_uniform(x, math.sqrt(3 * var))
    if distribution == "truncated_normal":
        s = math.sqrt(var) / TRUNC_STD  # std of the normal before truncation
        assert np.max(np.abs(x)) <= 2 * s and np.max(np.abs(x)) >= 0.99 * 2 * s


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("name", ["conv1d", "conv3d", "grouped"])
def test_variance_scaling_normal_other_ranks(key, layout, mode, name):
    shape = layout_shape(name, layout)
    assert_moments(init.variance_scaling(1.0, mode=mode, kernel_layout=layout)(key, shape),
                   expected_variance(1.0, mode, OIHW_SHAPES[name]))


def test_normal_is_not_truncated(key):
    # An exact Gaussian: of 165888 samples about 448 lie beyond 3 std and 10 beyond 4 std; a normal truncated
    # at 2 std (Flax's variance_scaling "normal") has none.
    x = np.asarray(init.variance_scaling(1.0, distribution="normal")(key, to_hwio(OIHW_SHAPES["dense"])))
    std = math.sqrt(1.0 / 288)
    assert np.sum(np.abs(x) > 3 * std) > 300 and np.max(np.abs(x)) > 4 * std


def test_truncated_normal_matches_torch_trunc_normal(key):
    # torch.nn.init.trunc_normal_(std=s, a=-2s, b=2s) has variance (s * TRUNC_STD)^2: the same distribution.
    oihw = OIHW_SHAPES["conv2d"]
    var = expected_variance(1.0, "fan_in", oihw)
    s = math.sqrt(var) / TRUNC_STD
    w = torch.nn.init.trunc_normal_(torch.empty(oihw), std=s, a=-2 * s, b=2 * s).numpy()
    assert_moments(w, var)
    assert_moments(init.variance_scaling(1.0, distribution="truncated_normal", kernel_layout="OIHW")(key, oihw), var)


# ---------------------------------------------------------------- named initializers vs torch.nn.init


def torch_sample(fn, oihw, **kwargs):
    return fn(torch.empty(oihw), **kwargs).numpy()


NAMED = {
    # name: (our factory kwargs, torch in-place init, its kwargs, expected variance from torch's fans, uniform?)
    "lecun_normal": (init.lecun_normal, {}, torch.nn.init.kaiming_normal_, dict(nonlinearity="linear"),
                     lambda fi, fo: 1 / fi, False),
    "lecun_uniform": (init.lecun_uniform, {}, torch.nn.init.kaiming_uniform_, dict(nonlinearity="linear"),
                      lambda fi, fo: 1 / fi, True),
    "xavier_normal": (init.xavier_normal, dict(gain=1.5), torch.nn.init.xavier_normal_, dict(gain=1.5),
                      lambda fi, fo: 1.5 ** 2 * 2 / (fi + fo), False),
    "xavier_uniform": (init.xavier_uniform, dict(gain=1.5), torch.nn.init.xavier_uniform_, dict(gain=1.5),
                       lambda fi, fo: 1.5 ** 2 * 2 / (fi + fo), True),
    "he_normal": (init.he_normal, {}, torch.nn.init.kaiming_normal_, dict(nonlinearity="relu"),
                  lambda fi, fo: 2 / fi, False),
    "he_normal_fan_out_leaky": (init.he_normal, dict(mode="fan_out", nonlinearity="leaky_relu", negative_slope=0.2),
                                torch.nn.init.kaiming_normal_, dict(a=0.2, mode="fan_out", nonlinearity="leaky_relu"),
                                lambda fi, fo: 2 / (1 + 0.2 ** 2) / fo, False),
    "he_uniform": (init.he_uniform, {}, torch.nn.init.kaiming_uniform_, dict(nonlinearity="relu"),
                   lambda fi, fo: 2 / fi, True),
    "he_uniform_fan_out_tanh": (init.he_uniform, dict(mode="fan_out", nonlinearity="tanh"),
                                torch.nn.init.kaiming_uniform_, dict(mode="fan_out", nonlinearity="tanh"),
                                lambda fi, fo: (5 / 3) ** 2 / fo, True),
}


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
@pytest.mark.parametrize("name", list(NAMED))
def test_named_initializer_matches_torch_distribution(key, layout, name):
    ours, kwargs, torch_init, torch_kwargs, variance, uniform = NAMED[name]
    oihw = OIHW_SHAPES["conv2d"]
    var = variance(*torch_fans(oihw))
    x = ours(**kwargs, kernel_layout=layout)(key, layout_shape("conv2d", layout))
    w = torch_sample(torch_init, oihw, **torch_kwargs)
    assert_moments(x, var)
    assert_moments(w, var)  # the formula is torch's
    if uniform:
        assert_fills_uniform(x, math.sqrt(3 * var))
        assert_fills_uniform(w, math.sqrt(3 * var))


def test_he_normal_dense_hwio_is_2_over_fan_in(key):
    x = init.he_normal()(key, (288, 576))
    assert_moments(x, 2 / 288)


def torch_default_bound(weight):
    """The bound torch.nn.Linear/ConvNd use, computed by torch's own code path (kaiming_uniform_, a=sqrt(5))."""
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    std = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(fan_in)
    return math.sqrt(3.0) * std, fan_in


TORCH_LAYERS = {
    "linear": lambda: torch.nn.Linear(288, 576),
    "conv1d": lambda: torch.nn.Conv1d(144, 384, 3),
    "conv2d": lambda: torch.nn.Conv2d(96, 192, 3),
    "conv2d_groups": lambda: torch.nn.Conv2d(256, 288, 3, groups=4),
    "conv3d": lambda: torch.nn.Conv3d(64, 96, 3),
}


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
@pytest.mark.parametrize("name", list(TORCH_LAYERS))
def test_pytorch_default_bounds_equal_torch(key, layout, name):
    layer = TORCH_LAYERS[name]()
    bound, fan_in = torch_default_bound(layer.weight)
    assert bound == pytest.approx(1 / math.sqrt(fan_in), rel=1e-12)
    w = layer.weight.detach().numpy()
    assert np.abs(w).max() <= bound  # torch's own weights respect it
    shape = tuple(w.shape) if layout == "OIHW" else to_hwio(tuple(w.shape))
    x = init.pytorch_default(kernel_layout=layout)(key, shape)
    assert_fills_uniform(x, bound)
    assert_moments(x, bound ** 2 / 3)


@pytest.mark.parametrize("name", ["linear", "conv2d_groups"])
def test_pytorch_default_bias_equals_torch(key, name):
    layer = TORCH_LAYERS[name]()
    bound, fan_in = torch_default_bound(layer.weight)
    assert init.compute_fans(tuple(layer.weight.shape), kernel_layout="OIHW")[0] == fan_in
    assert np.abs(layer.bias.detach().numpy()).max() <= 1 / math.sqrt(fan_in)  # torch's bias rule
    b = init.pytorch_default_bias(fan_in)(key, (N,))  # a bias this long only to see the bounds filled
    assert_fills_uniform(b, 1 / math.sqrt(fan_in))


def test_pytorch_default_bias_zero_fan_in(key):
    np.testing.assert_array_equal(init.pytorch_default_bias(0)(key, (N,)), 0.0)


# ---------------------------------------------------------------- plumbing: dtype, keys, jit, Flax, zeros/ones


@pytest.mark.parametrize("dtype,distribution", [(jnp.bfloat16, "uniform"), (jnp.float16, "truncated_normal")])
def test_dtype(key, dtype, distribution):
    shape = to_hwio(OIHW_SHAPES["conv2d"])
    x = init.variance_scaling(1.0, distribution=distribution)(key, shape, dtype)
    assert x.dtype == dtype and x.shape == shape
    assert_moments(x, 1 / 864)  # rounding to 8 (bf16) or 11 (f16) mantissa bits changes the variance by < 1%


def test_same_key_same_values_other_key_other_values(key):
    f, shape = init.he_uniform(), (288, 576)
    np.testing.assert_array_equal(f(key, shape), f(key, shape))
    assert not np.array_equal(f(key, shape), f(jax.random.fold_in(key, 1), shape))


def test_jit(key):
    f = init.xavier_normal(kernel_layout="OIHW")
    jitted = jax.jit(f, static_argnums=(1, 2))
    # rtol 1e-6: under jit XLA fuses the std multiply into the sampler, which may round differently (1 ulp).
    np.testing.assert_allclose(jitted(key, (8, 4, 3, 3), jnp.float32), f(key, (8, 4, 3, 3)), rtol=1e-6, atol=0)


def test_flax_kernel_init(key):
    import flax.linen as nn
    params = nn.Dense(576, kernel_init=init.he_normal(), bias_init=init.zeros).init(key, jnp.ones((1, 288)))
    kernel = params["params"]["kernel"]
    assert kernel.shape == (288, 576)
    assert_moments(kernel, 2 / 288)
    np.testing.assert_array_equal(params["params"]["bias"], 0.0)


def test_zero_size_kernel(key):
    assert init.he_normal()(key, (3, 3, 0, 8)).shape == (3, 3, 0, 8)


def test_zeros_ones(key):
    assert init.zeros(key, (2, 3), jnp.bfloat16).dtype == jnp.bfloat16
    np.testing.assert_array_equal(init.zeros(key, (5,)), np.zeros(5))
    np.testing.assert_array_equal(init.ones(key, (2, 3)), np.ones((2, 3)))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("shape", [(5,), ()])
def test_compute_fans_bias_shape_raises(shape):
    with pytest.raises(ValueError, match="compute_fans: fan in and fan out can not be computed for tensor with "
                                         "fewer than 2 dimensions"):
        init.compute_fans(shape)


def test_initializer_on_bias_shape_names_the_initializer(key):
    with pytest.raises(ValueError, match=r"he_normal: fan in and fan out can not be computed .* got shape \(5,\)"):
        init.he_normal()(key, (5,))


def test_compute_fans_unknown_layout_raises():
    with pytest.raises(ValueError, match="compute_fans: unknown kernel_layout 'NHWC'"):
        init.compute_fans((3, 3, 4, 8), kernel_layout="NHWC")


def test_compute_fans_bad_shape_type_raises():
    with pytest.raises(TypeError, match=r"compute_fans: shape must be a tuple of non-negative ints, got tuple \(3, 2.5\)"):
        init.compute_fans((3, 2.5))


def test_calculate_gain_unknown_nonlinearity_raises():
    with pytest.raises(ValueError, match=r"calculate_gain: unknown nonlinearity 'gelu'; expected one of \(.*'relu'"):
        init.calculate_gain("gelu")


@pytest.mark.parametrize("param", [True, "0.1"])
def test_calculate_gain_bad_slope_raises(param):
    with pytest.raises(TypeError, match="calculate_gain: param \\(the leaky_relu negative slope\\) must be a real"):
        init.calculate_gain("leaky_relu", param)


def test_variance_scaling_unknown_mode_raises():
    with pytest.raises(ValueError, match=r"variance_scaling: unknown mode 'fan_max'; expected one of "
                                         r"\('fan_in', 'fan_out', 'fan_avg'\)"):
        init.variance_scaling(1.0, mode="fan_max")


def test_variance_scaling_unknown_distribution_raises():
    with pytest.raises(ValueError, match="variance_scaling: unknown distribution 'gaussian'; expected one of"):
        init.variance_scaling(1.0, distribution="gaussian")


def test_variance_scaling_negative_scale_raises():
    with pytest.raises(ValueError, match="variance_scaling: scale must be a finite real number > 0.0, got -1.0"):
        init.variance_scaling(-1.0)
    with pytest.raises(ValueError, match="variance_scaling: scale must be a finite real number > 0.0, got 0.0"):
        init.variance_scaling(0.0)


def test_variance_scaling_unknown_layout_raises():
    with pytest.raises(ValueError, match="variance_scaling: unknown kernel_layout 'NCHW'"):
        init.variance_scaling(1.0, kernel_layout="NCHW")


def test_he_fan_avg_raises():
    with pytest.raises(ValueError, match=r"he_normal: unknown mode 'fan_avg'; expected one of \('fan_in', 'fan_out'\)"):
        init.he_normal(mode="fan_avg")


def test_he_unknown_nonlinearity_raises():
    with pytest.raises(ValueError, match="calculate_gain: unknown nonlinearity 'swish'"):
        init.he_uniform(nonlinearity="swish")


def test_xavier_bad_gain_raises():
    with pytest.raises(TypeError, match="xavier_uniform: gain must be a real number > 0.0, got str 'a'"):
        init.xavier_uniform("a")


def test_integer_dtype_raises(key):
    with pytest.raises(TypeError, match="lecun_normal: dtype must be a floating dtype, got int32"):
        init.lecun_normal()(key, (4, 4), jnp.int32)


def test_pytorch_default_bias_negative_fan_in_raises():
    with pytest.raises(ValueError, match="pytorch_default_bias: fan_in must be an int >= 0, got -1"):
        init.pytorch_default_bias(-1)


def test_pytorch_default_bias_non_int_fan_in_raises():
    with pytest.raises(TypeError, match="pytorch_default_bias: fan_in must be an int >= 0, got float 2.5"):
        init.pytorch_default_bias(2.5)


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal"])
@pytest.mark.parametrize("gain", [-1.0, 0.0])
def test_xavier_non_positive_gain_raises(name, gain):
    # PyTorch fails only when sampling with a negative gain and returns zeros for 0; here both are refused.
    with pytest.raises(ValueError, match=rf"{name}: gain must be a finite real number > 0.0, got {gain}"):
        getattr(init, name)(gain)


def test_he_bad_negative_slope_raises():
    with pytest.raises(TypeError, match="he_normal: negative_slope must be a real number, got str 'a'"):
        init.he_normal(negative_slope="a")


def test_compute_fans_negative_size_raises():
    with pytest.raises(ValueError, match=r"compute_fans: shape must be a tuple of non-negative ints, got \(3, -1\)"):
        init.compute_fans((3, -1))


def test_compute_fans_non_string_kernel_layout_raises():
    with pytest.raises(TypeError, match="compute_fans: kernel_layout must be a string such as 'HWIO'"):
        init.compute_fans((3, 4), kernel_layout=None)


# ---------------------------------------------------------------- keys


INITIALIZERS = {
    "variance_scaling": init.variance_scaling(1.0), "lecun_normal": init.lecun_normal(),
    "lecun_uniform": init.lecun_uniform(), "xavier_normal": init.xavier_normal(), "xavier_uniform": init.xavier_uniform(),
    "he_normal": init.he_normal(), "he_uniform": init.he_uniform(), "pytorch_default": init.pytorch_default(),
    "pytorch_default_bias": init.pytorch_default_bias(4), "normal": init.normal(0.1), "uniform": init.uniform(),
    "zeros": init.zeros, "ones": init.ones,
}


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
@pytest.mark.parametrize("bad", [3, None, "key", np.zeros(2, np.float32)], ids=["int", "None", "str", "float_array"])
def test_initializer_rejects_a_non_key(name, bad):
    with pytest.raises(TypeError, match=rf"{name}: key must be a PRNG key"):
        INITIALIZERS[name](bad, (4, 3))


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_initializer_rejects_a_batch_of_keys(name):
    keys = jax.random.split(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=rf"{name}: key must be a single PRNG key, got a batch of keys"):
        INITIALIZERS[name](keys, (4, 3))


def test_initializer_accepts_a_raw_key():
    raw = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(init.he_normal()(raw, (4, 3)), init.he_normal()(raw, (4, 3)))


# ---------------------------------------------------------------- deprecated layout= keyword


@pytest.mark.parametrize("factory", [init.lecun_normal, init.lecun_uniform, init.xavier_normal, init.xavier_uniform,
                                     init.he_normal, init.he_uniform, init.pytorch_default,
                                     lambda **kw: init.variance_scaling(2.0, **kw)])
def test_layout_keyword_is_deprecated_and_still_works(key, factory):
    with pytest.warns(DeprecationWarning, match=r"the keyword layout= is deprecated .* pass kernel_layout='OIHW'"):
        old = factory(layout="OIHW")
    new = factory(kernel_layout="OIHW")
    shape = (8, 3, 5, 5)  # fans differ between the two families: the layout must be the one passed
    np.testing.assert_array_equal(old(key, shape), new(key, shape))
    assert not np.array_equal(new(key, shape), factory()(key, shape))


def test_compute_fans_layout_keyword_is_deprecated():
    with pytest.warns(DeprecationWarning, match="compute_fans: the keyword layout= is deprecated"):
        assert init.compute_fans((8, 3, 5, 5), layout="OIHW") == (75, 200)


# ---------------------------------------------------------------- normal, uniform


@pytest.mark.parametrize("std, mean", [(1.0, 0.0), (0.01, 0.0), (2.0, -3.0)])
def test_normal_moments(key, std, mean):
    x = np.asarray(init.normal(std=std, mean=mean)(key, (200_000,)), np.float64)
    n = x.size
    # Standard errors: std / sqrt(n) for the mean, std^2 * sqrt(2 / n) for the variance; 5 of each.
    assert abs(x.mean() - mean) < 5 * std / np.sqrt(n)
    assert abs(x.var() - std ** 2) < 5 * std ** 2 * np.sqrt(2 / n)


def test_normal_matches_torch_distribution(key):
    # Different generators: compare the distributions (two-sample KS) rather than the values.
    from scipy import stats
    x = np.asarray(init.normal(std=0.02, mean=0.5)(key, (256, 128))).ravel()
    t = torch.nn.init.normal_(torch.empty(256, 128), mean=0.5, std=0.02).numpy().ravel()
    assert stats.ks_2samp(x, t).pvalue > 1e-4


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (-0.5, 0.25)])
def test_uniform_range_and_moments(key, a, b):
    x = np.asarray(init.uniform(a, b)(key, (200_000,)), np.float64)
    assert x.min() >= a and x.max() < b
    n, var = x.size, (b - a) ** 2 / 12
    assert abs(x.mean() - (a + b) / 2) < 5 * np.sqrt(var / n)
    assert abs(x.var() - var) < 5 * var * np.sqrt(0.8 / n)  # Var of a uniform's sample variance: 0.8 var^2 / n


def test_uniform_matches_torch_distribution(key):
    from scipy import stats
    x = np.asarray(init.uniform(-0.5, 0.25)(key, (256, 128))).ravel()
    t = torch.nn.init.uniform_(torch.empty(256, 128), -0.5, 0.25).numpy().ravel()
    assert stats.ks_2samp(x, t).pvalue > 1e-4


def test_normal_uniform_dtype_and_flax(key):
    assert init.normal(0.1)(key, (3, 2), jnp.bfloat16).dtype == jnp.bfloat16
    assert init.uniform()(key, (3, 2), jnp.float16).dtype == jnp.float16
    params = flax.linen.Dense(3, kernel_init=init.normal(0.01)).init(key, jnp.ones((1, 4)))
    assert params["params"]["kernel"].shape == (4, 3)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(std=0.0), ValueError, r"normal: std must be a finite real number > 0.0, got 0.0"),
    (dict(std=-1.0), ValueError, r"normal: std must be a finite real number > 0.0, got -1.0"),
    (dict(std="1"), TypeError, r"normal: std must be a real number > 0.0, got str '1'"),
    (dict(std=1.0, mean=None), TypeError, r"normal: mean must be a real number, got NoneType None"),
])
def test_normal_bad_arguments_raise(kw, exc, match):
    with pytest.raises(exc, match=match):
        init.normal(**kw)


@pytest.mark.parametrize("args, exc, match", [
    ((1.0, 0.0), ValueError, r"uniform: the bounds must satisfy a < b, got a=1.0, b=0.0"),
    ((0.5, 0.5), ValueError, r"uniform: the bounds must satisfy a < b"),
    ((0.0, True), TypeError, r"uniform: b must be a real number, got bool True"),
])
def test_uniform_bad_arguments_raise(args, exc, match):
    with pytest.raises(exc, match=match):
        init.uniform(*args)
