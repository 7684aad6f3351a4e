"""Every integer option of every public function and module in layers/, init/, nn/ (and cost.summary):
`1.5` and `True` are the wrong TYPE, so each raises TypeError naming the argument (the error rule of
jaxnets/checks.py: `bool` is never an int)."""
import jax
import jax.numpy as jnp
import pytest

from jaxnets import init, layers
from jaxnets import nn as jnn
from jaxnets.cost import summary

X4 = jnp.ones((2, 6, 6, 4))          # NHWC
K = jnp.ones((3, 3, 4, 8))           # HWIO
LOGITS, LABELS = jnp.zeros((2, 3)), jnp.array([0, 1])


def _module(module, x=X4):
    return lambda: module.init(jax.random.key(0), x)


# (id, the argument's name as the message gives it, call with value v)
CASES = [
    # layers.conv / conv_output_size
    ("conv.stride", "stride", lambda v: layers.conv(X4, K, stride=v)),
    ("conv.dilation", "dilation", lambda v: layers.conv(X4, K, dilation=v)),
    ("conv.groups", "groups", lambda v: layers.conv(X4, K, groups=v)),
    ("conv.padding", "padding", lambda v: layers.conv(X4, K, padding=v)),
    ("conv_output_size.size", "size", lambda v: layers.conv_output_size(v, 3)),
    ("conv_output_size.kernel", "kernel", lambda v: layers.conv_output_size(8, v)),
    ("conv_output_size.stride", "stride", lambda v: layers.conv_output_size(8, 3, stride=v)),
    ("conv_output_size.padding", "padding", lambda v: layers.conv_output_size(8, 3, padding=v)),
    ("conv_output_size.dilation", "dilation", lambda v: layers.conv_output_size(8, 3, dilation=v)),
    # pooling
    ("max_pool.window", "window", lambda v: layers.max_pool(X4, v)),
    ("max_pool.stride", "stride", lambda v: layers.max_pool(X4, 2, stride=v)),
    ("max_pool.padding", "padding", lambda v: layers.max_pool(X4, 2, padding=v)),
    ("avg_pool.window", "window", lambda v: layers.avg_pool(X4, v)),
    ("avg_pool.stride", "stride", lambda v: layers.avg_pool(X4, 2, stride=v)),
    ("avg_pool.padding", "padding", lambda v: layers.avg_pool(X4, 2, padding=v)),
    ("adaptive_avg_pool.output_size", "output_size", lambda v: layers.adaptive_avg_pool(X4, v)),
    # activations
    ("maxout.pieces", "pieces", lambda v: layers.maxout(X4, v)),
    ("log_softmax.axis", "axis", lambda v: layers.log_softmax(X4, axis=v)),
    # normalization
    ("group_norm.groups", "groups", lambda v: layers.group_norm(X4, layers.init_group_norm(4), groups=v)),
    ("init_batch_norm.num_features", "num_features", lambda v: layers.init_batch_norm(v)),
    ("init_group_norm.num_channels", "num_channels", lambda v: layers.init_group_norm(v)),
    ("init_instance_norm.num_channels", "num_channels", lambda v: layers.init_instance_norm(v)),
    ("init_layer_norm.normalized_shape", "normalized_shape", lambda v: layers.init_layer_norm(v)),
    ("init_layer_norm.normalized_shape_entry", "normalized_shape", lambda v: layers.init_layer_norm((4, v))),
    # metrics, losses
    ("accuracy.k", "k", lambda v: layers.accuracy(LOGITS, LABELS, k=v)),
    ("cross_entropy.ignore_index", "ignore_index", lambda v: layers.cross_entropy(LOGITS, LABELS, ignore_index=v)),
    ("nll_loss.ignore_index", "ignore_index", lambda v: layers.nll_loss(LOGITS, LABELS, ignore_index=v)),
    # init
    ("compute_fans.shape", "shape", lambda v: init.compute_fans((3, v))),
    ("pytorch_default_bias.fan_in", "fan_in", lambda v: init.pytorch_default_bias(v)),
    ("he_normal.shape", "shape", lambda v: init.he_normal()(jax.random.key(0), (4, v))),
    ("normal.shape", "shape", lambda v: init.normal(1.0)(jax.random.key(0), (4, v))),
    ("zeros.shape", "shape", lambda v: init.zeros(jax.random.key(0), (4, v))),
    # nn modules
    ("Conv.features", "features", lambda v: _module(jnn.Conv(v, 3))()),
    ("Conv.kernel_size", "kernel_size", lambda v: _module(jnn.Conv(4, v))()),
    ("Conv.stride", "stride", lambda v: _module(jnn.Conv(4, 3, stride=v))()),
    ("Conv.padding", "padding", lambda v: _module(jnn.Conv(4, 3, padding=v))()),
    ("Conv.dilation", "dilation", lambda v: _module(jnn.Conv(4, 3, dilation=v))()),
    ("Conv.groups", "groups", lambda v: _module(jnn.Conv(4, 3, groups=v))()),
    ("Dense.features", "features", lambda v: _module(jnn.Dense(v))()),
    ("MaxPool.window", "window", lambda v: _module(jnn.MaxPool(v))()),
    ("MaxPool.stride", "stride", lambda v: _module(jnn.MaxPool(2, stride=v))()),
    ("MaxPool.padding", "padding", lambda v: _module(jnn.MaxPool(2, padding=v))()),
    ("AvgPool.window", "window", lambda v: _module(jnn.AvgPool(v))()),
    ("AvgPool.stride", "stride", lambda v: _module(jnn.AvgPool(2, stride=v))()),
    ("AvgPool.padding", "padding", lambda v: _module(jnn.AvgPool(2, padding=v))()),
    ("AdaptiveAvgPool.output_size", "output_size", lambda v: _module(jnn.AdaptiveAvgPool(v))()),
    ("Maxout.pieces", "pieces", lambda v: _module(jnn.Maxout(v))()),
    ("GroupNorm.groups", "groups", lambda v: _module(jnn.GroupNorm(v))()),
    ("LogSoftmax.axis", "axis", lambda v: _module(jnn.LogSoftmax(axis=v))()),
    # cost
    ("summary.batch_size", "batch_size", lambda v: summary(jnn.Conv(4, 3), (6, 6, 3), batch_size=v)),
    ("summary.input_shape", "input_shape", lambda v: summary(jnn.Conv(4, 3), (6, v, 3))),
]


@pytest.mark.parametrize("value", [1.5, True], ids=["float", "bool"])
@pytest.mark.parametrize("name, call", [(n, c) for _, n, c in CASES], ids=[i for i, _, _ in CASES])
def test_integer_option_of_the_wrong_type_raises_type_error(name, call, value):
    with pytest.raises(TypeError, match=rf"\b{name}\b.*must be"):
        call(value)


def test_every_case_is_exercised_with_a_valid_int():
    """The same calls with a valid int do not raise: the TypeErrors above come from the option, not the setup."""
    valid = {"conv.groups": 1, "conv_output_size.size": 8, "summary.input_shape": 6, "conv.padding": 1, "conv_output_size.padding": 1, "max_pool.padding": 1, "avg_pool.padding": 1,
             "Conv.padding": 1, "MaxPool.padding": 1, "AvgPool.padding": 1, "log_softmax.axis": -1,
             "LogSoftmax.axis": -1, "cross_entropy.ignore_index": -100, "nll_loss.ignore_index": -100,
             "compute_fans.shape": 2, "he_normal.shape": 2, "normal.shape": 2, "zeros.shape": 2,
             "pytorch_default_bias.fan_in": 3, "init_layer_norm.normalized_shape_entry": 2}
    for case_id, _, call in CASES:
        assert call(valid.get(case_id, 2)) is not None, case_id  # a layer, module, array or initializer
