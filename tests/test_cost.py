"""jaxnets.cost.summary: the course notes' AlexNet conv1 figures, published multiply-add counts, the
per-layer accounting rules, the table, errors. Everything runs under jax.eval_shape: a VGG-16 at batch 128
(hundreds of GFLOPs, gigabytes of activations) must summarise in seconds."""
import flax.linen as flax_nn
import jax.numpy as jnp
import pytest

from jaxnets import models
from jaxnets import nn as jnn
from jaxnets.cost import MIB, PARAM_COPIES, summary


def test_alexnet_conv1_matches_the_notes():
    """reference/004_*: 96 filters 11x11x3, stride 4, on a batch of 128 227x227x3 images."""
    s = summary(jnn.Conv(96, 11, stride=4), (227, 227, 3), batch_size=128)
    (row,) = s.rows
    assert row.output_shape == (128, 55, 55, 96)
    assert row.params == s.params == (11 * 11 * 3 + 1) * 96 == 34_944
    assert row.activations == 55 * 55 * 96 == 290_400
    # 2 FLOPs per multiply-add: 290,400 outputs x 363 multiply-adds x 2 x 128 = 26.99 GFLOPs ("27 GFlops").
    assert row.flops == 2 * 290_400 * 363 * 128 == 26_986_291_200
    # Activation plus gradient, float32: 2 * 128 * 290,400 * 4 bytes = 283.6 MiB (the notes' "283.6 MB").
    assert row.activation_bytes == 2 * 128 * 290_400 * 4
    assert round(row.activation_bytes / MIB, 1) == 283.6
    assert s.param_bytes == PARAM_COPIES * 34_944 * 4  # value, gradient, two Adam moments
    assert s.training_bytes == s.param_bytes + s.activation_bytes


@pytest.mark.parametrize("name,gmacs,tol", [
    ("resnet50", 4.09, 0.02),    # the widely published 4.09 GMACs (torchvision: "GFLOPS 4.09")
    ("alexnet", 0.714, 0.01),    # torchvision: 0.71
    ("vgg16", 15.47, 0.01),      # torchvision: 15.47
])
def test_published_multiply_add_counts(name, gmacs, tol):
    s = summary(models.create(name), (224, 224, 3))
    assert s.macs_per_example / 1e9 == pytest.approx(gmacs, rel=tol)
    assert s.flops_per_example == 2 * s.macs_per_example


def test_no_compute_and_batch_scaling():
    one = summary(models.create("vgg16"), (224, 224, 3))
    big = summary(models.create("vgg16"), (224, 224, 3), batch_size=128)  # ~4 TFLOPs, ~11 GiB if it ran
    assert big.flops == 128 * one.flops
    assert big.activation_bytes == 128 * one.activation_bytes
    assert big.params == one.params == 138_357_544
    assert [r.activations for r in big.rows] == [r.activations for r in one.rows]


def test_rows_params_state_and_conventions():
    s = summary(models.create("vgg11_bn", variant="cifar"), (32, 32, 3), batch_size=2)
    rows = {r.name: r for r in s.rows}
    assert rows["features_0"].kind == "Conv" and rows["features_0"].params == 3 * 9 * 64 + 64
    bn = rows["features_1"]
    assert bn.kind == "BatchNorm" and bn.params == 128 and bn.state == 128 and bn.flops == 0
    assert rows["features_2"].kind == "ReLU" and rows["features_2"].flops == 0
    assert rows["features_2"].activation_bytes == 2 * 4 * 2 * 32 * 32 * 64
    assert rows["flatten"].activation_bytes == 0  # a view of its input
    assert rows["classifier"].flops == 2 * 2 * 512 * 10
    assert sum(r.params for r in s.rows) == s.params
    assert sum(r.state for r in s.rows) == s.state == 2 * (64 + 128 + 256 * 2 + 512 * 4)
    assert s.state_bytes == 4 * s.state
    assert s.training_bytes == PARAM_COPIES * 4 * s.params + 4 * s.state + s.activation_bytes
    # Execution order, innermost modules only (no row for the model itself).
    assert [r.name for r in s.rows][:3] == ["features_0", "features_1", "features_2"]
    assert "(model)" not in rows


def test_grouped_conv_and_nchw_flops():
    s = summary(jnn.Conv(8, 3, groups=4, padding=1, layout="NCHW"), (8, 5, 5))
    assert s.rows[0].output_shape == (1, 8, 5, 5)
    assert s.flops == 2 * (8 * 5 * 5) * (3 * 3 * 8 // 4)
    assert s.params == 3 * 3 * 2 * 8 + 8


class Shared(flax_nn.Module):
    @flax_nn.compact
    def __call__(self, x):
        dense = jnn.Dense(4, name="shared")
        return dense(jnn.ReLU()(dense(x)))


def test_shared_module_counts_params_once_and_flops_twice():
    s = summary(Shared(), (4,), batch_size=3)
    shared = [r for r in s.rows if r.name == "shared"]
    assert len(shared) == 2
    assert [r.params for r in shared] == [20, 0] and s.params == 20
    assert [r.flops for r in shared] == [2 * 3 * 4 * 4] * 2


def test_sequential_names_and_table(capsys):
    model = jnn.Sequential([jnn.Conv(4, 3), jnn.BatchNorm(), jnn.ReLU(), jnn.GlobalAvgPool(), jnn.Dense(2)])
    s = summary(model, (6, 6, 3), batch_size=5, print_table=True)
    assert [r.name for r in s.rows] == [f"layers_{i}" for i in range(5)]
    assert [r.kind for r in s.rows] == ["Conv", "BatchNorm", "ReLU", "GlobalAvgPool", "Dense"]
    printed = capsys.readouterr().out
    assert printed.strip() == str(s)
    for text in ("layers_0", "GlobalAvgPool", "(5, 4, 4, 4)", f"{s.params:,} trainable", "MMACs per example",
                 "training memory"):
        assert text in printed
    assert summary(model, (6, 6, 3), batch_size=5).rows == s.rows


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(input_shape=(32, 32, 3), batch_size=0), ValueError, r"summary: batch_size must be a positive int, got 0"),
    (dict(input_shape=(32, 32, 3), batch_size=2.0), TypeError, r"summary: batch_size must be a positive int, got "
                                                               r"float 2.0"),
    (dict(input_shape=32), TypeError, r"summary: input_shape must be a sequence of positive ints .*got int 32"),
    (dict(input_shape=(32, 0, 3)), ValueError, r"summary: input_shape must be a sequence of positive ints"),
])
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        summary(jnn.Conv(4, 3), **kwargs)


def test_input_dtype_is_float32():
    s = summary(jnn.Dense(3), (7,))
    assert s.rows[0].activation_bytes == 2 * 3 * jnp.dtype(jnp.float32).itemsize


@pytest.mark.parametrize("name, relus", [("resnet18", 17), ("resnet50", 49), ("se_resnet18", 25),
                                         ("googlenet", 57)])
def test_every_relu_of_the_residual_and_inception_nets_is_a_row(name, relus):
    # stem 1 + 2 per basic block (8 blocks) = 17; stem 1 + 3 per bottleneck (16) = 49; SE adds one ReLU
    # (and one Sigmoid) per block; GoogLeNet: one per BasicConv2d (57 convs). Their activations count in
    # the training memory like every other layer's.
    s = summary(models.create(name, variant="cifar"), (32, 32, 3))
    assert sum(r.kind == "ReLU" for r in s.rows) == relus
    if name == "se_resnet18":
        assert sum(r.kind == "Sigmoid" for r in s.rows) == 8
