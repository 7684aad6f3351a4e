"""jaxnets.models.resnet: exact ImageNet parameter counts and output shapes (traced, no compute), one
jit-compiled training step per registry name on the CIFAR variant (batch 2, 32x32, train AND eval forward),
v1 / v1.5 / v2 block structure against hand-written formulas, zero_init_residual, SE, error messages.
PyTorch parity of the ported weights is in test_port.py."""
from functools import partial

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import layers, models

from _variables import FAST_COMPILE, random_variables
from jaxnets.models import resnet as R

# torchvision's counts (v1.5 = v1 for every depth: the stride moves, the weights do not); SE-ResNet-50:
# 28.09M in Hu et al. 2018, Table 2 (SE 1x1 convs with biases, reduction 16).
IMAGENET_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904, "se_resnet18": 11_778_592,
    "se_resnet34": 21_958_868, "se_resnet50": 28_088_024,
}
RESNET_NAMES = sorted(IMAGENET_PARAMS)


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _x(rng, shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def test_every_name_is_registered():
    assert set(RESNET_NAMES) <= set(models.available())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n in ("resnet101", "resnet152") else ())
                                  for n in RESNET_NAMES])  # the deepest two: ImageNet-size traces, slow
def test_imagenet_parameter_count_and_output_shape(name):
    model = models.create(name)
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    # train=True in init traces the training forward (init never updates the statistics).
    logits, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=True), x)
    assert count(variables["params"]) == IMAGENET_PARAMS[name]
    assert logits.shape == (2, 1000)
    eval_logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert eval_logits.shape == (2, 1000)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_other_versions_at_imagenet_size(version):
    model = models.create("resnet50", version=version)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    logits, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
    assert logits.shape == (1, 1000)
    # v1 moves a stride, not a weight. v2 drops the stem BN (2 * 64) and the 4 projection BNs
    # (2 * (256 + 512 + 1024 + 2048)), adds the final BN (2 * 2048), and each stage's first block normalises
    # its input (64, 256, 512, 1024 channels) instead of its output (256, 512, 1024, 2048).
    expected = 25_557_032 if version == "v1" else 25_557_032 - 128 - 7680 + 4096 - 2 * (192 + 256 + 512 + 1024)
    assert count(variables["params"]) == expected
    if version == "v2":
        assert "bn1" not in variables["params"] and "bn_final" in variables["params"]
        assert set(variables["params"]["layer2_0"]) >= {"downsample_0", "bn1", "bn2", "bn3"}
        assert "downsample_1" not in variables["params"]["layer2_0"]


# ------------------------------------------------------------------------------------------------
# One jit-compiled training step per registry name (CIFAR variant, batch 2, 32x32): train forward,
# gradient, SGD update and eval forward compiled together, so each name costs one compilation.
# ------------------------------------------------------------------------------------------------

# LLVM optimisation level 0 halves XLA's CPU compile time of these large graphs (ResNet-50: 16 s -> 8 s);
# it changes only how fast the step runs, which a test of one step does not care about.
def train_step_and_eval(model, variables, x, labels):
    """One SGD step (train-mode forward, gradient, update, new batch_stats), then an eval forward."""
    tx = optax.sgd(0.01, momentum=0.9)

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(variables, x, labels):
        params, stats = variables["params"], variables["batch_stats"]

        def loss_fn(p):
            logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            return layers.cross_entropy(logits, labels), (logits, new["batch_stats"])

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new_params = optax.apply_updates(params, updates)
        eval_logits = model.apply({"params": new_params, "batch_stats": new_stats}, x, train=False)
        return loss, logits, eval_logits, new_params, new_stats

    return run(variables, x, labels)


# resnet34/101/152 and se_resnet34 are the blocks of resnet18/50 and se_resnet18 stacked deeper (their
# construction is checked by the parameter counts above); their training steps only add XLA compile time to
# the suite (150 s), so they are left out.
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in ("resnet18",) else pytest.mark.slow)
                                  for n in RESNET_NAMES if n not in ("resnet34", "se_resnet34", "resnet101", "resnet152")])
def test_training_step_cifar(name, rng):
    model = models.create(name, variant="cifar")
    # XLA's CPU gradient of grouped convs is slow (ResNeXt: 18 s at 32x32, 5 s at 16x16); 16x16 still runs
    # every layer (layer4 at 2x2).
    size = 16 if name == "resnext50_32x4d" else 32
    x, labels = _x(rng, (2, size, size, 3)), jnp.array([3, 7])
    variables = random_variables(model, x, rng)
    loss, logits, eval_logits, new_params, new_stats = train_step_and_eval(model, variables, x, labels)
    assert logits.shape == eval_logits.shape == (2, 10)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert np.all(np.isfinite(eval_logits))
    # The step moved the weights and the running statistics.
    assert not np.allclose(new_params["fc"]["kernel"], variables["params"]["fc"]["kernel"])
    assert not np.allclose(new_stats["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"])


# ------------------------------------------------------------------------------------------------
# Blocks: v1 / v1.5 stride placement, hand-written formulas, zero_init_residual
# ------------------------------------------------------------------------------------------------

def _conv_shapes(block, x):
    """Output shape of every conv of `block` on `x` (captured intermediates, traced only)."""
    def run(x):
        variables = block.init(jax.random.key(0), x, train=False)
        _, state = block.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
        return variables, state["intermediates"]

    variables, inter = jax.eval_shape(run, x)
    return variables, {name: inter[name]["__call__"][0].shape for name in inter if name.startswith(("conv", "down"))}


def test_bottleneck_stride_v1_on_1x1_v15_on_3x3():
    x = jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)
    shapes, kernels = {}, {}
    for version in ("v1", "v1.5"):
        block = R.Bottleneck(8, stride=2, downsample=True, version=version)
        variables, shapes[version] = _conv_shapes(block, x)
        kernels[version] = jax.tree.map(lambda a: a.shape, variables["params"])
    assert shapes["v1"]["conv1"] == (1, 4, 4, 8) and shapes["v1.5"]["conv1"] == (1, 8, 8, 8)
    for version in ("v1", "v1.5"):
        assert shapes[version]["conv2"] == (1, 4, 4, 8)
        assert shapes[version]["conv3"] == shapes[version]["downsample_0"] == (1, 4, 4, 32)
    assert kernels["v1"] == kernels["v1.5"]  # same weights, different stride placement


def test_full_resnet50_v1_and_v15_downsample_at_different_convs():
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    for version, conv1_size in (("v1", 4), ("v1.5", 8)):
        model = models.create("resnet50", version=version)

        def run(x):
            v = model.init(jax.random.key(0), x, train=False)
            return model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])[1]

        inter = jax.eval_shape(run, x)["intermediates"]
        # layer2_0 gets 16x16 (64 / 4); its conv1 output is 8x8 in v1, still 16x16 in v1.5.
        assert inter["layer2_0"]["conv1"]["__call__"][0].shape[1] == 2 * conv1_size
        assert inter["layer3_0"]["conv1"]["__call__"][0].shape[1] == conv1_size


def _bn(x, v, name, train):
    return layers.batch_norm(x, v["params"][name], v["batch_stats"][name], train=train)[0]


def _noisy_variables(module, x, rng):
    """Random values for every variable of `module` (shapes traced, nothing computed): kernels and biases
    normal(0, 0.3), BN scales and running variances in [0.5, 1.5], so eval mode is a non-trivial map."""
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)

    def draw(path, leaf):
        if path[-1].key in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.3, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, flax.core.unfreeze(shapes))


@pytest.mark.parametrize("version", ["v1.5", "v2"])
def test_basic_block_matches_formula(version, rng):
    x = _x(rng, (2, 8, 8, 4))
    block = R.BasicBlock(6, stride=2, downsample=True, version=version)
    v = _noisy_variables(block, x, rng)

    def conv(x, name, stride=1, pad=1):
        return layers.conv(x, v["params"][name]["kernel"], stride=stride, padding=pad)

    @jax.jit
    def run(x, v):
        out = []
        for train in (False, True):
            y = block.apply(v, x, train=train, mutable=["batch_stats"])[0]
            if version == "v2":
                pre = layers.relu(_bn(x, v, "bn1", train))
                res = conv(layers.relu(_bn(conv(pre, "conv1", 2), v, "bn2", train)), "conv2")
                expected = res + conv(pre, "downsample_0", 2, 0)
            else:
                res = _bn(conv(layers.relu(_bn(conv(x, "conv1", 2), v, "bn1", train)), "conv2"), v, "bn2", train)
                expected = layers.relu(res + _bn(conv(x, "downsample_0", 2, 0), v, "downsample_1", train))
            out.append((y, expected))
        return out

    for y, expected in run(x, v):
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("version", ["v1", "v1.5", "v2"])
def test_bottleneck_matches_formula(version, rng):
    x = _x(rng, (2, 8, 8, 8))
    block = R.Bottleneck(4, stride=2, downsample=True, version=version, groups=2, width_per_group=32)
    v = _noisy_variables(block, x, rng)
    p = v["params"]
    assert p["conv2"]["kernel"].shape == (3, 3, 2, 4)  # width int(4 * 32 / 64) * 2 = 4, in 2 groups

    def conv(x, name, stride=1, pad=0, groups=1):
        return layers.conv(x, p[name]["kernel"], stride=stride, padding=pad, groups=groups)

    @jax.jit
    def run(x, v):
        s1, s3 = (2, 1) if version == "v1" else (1, 2)
        if version == "v2":
            pre = layers.relu(_bn(x, v, "bn1", False))
            h = layers.relu(_bn(conv(pre, "conv1", s1), v, "bn2", False))
            h = layers.relu(_bn(conv(h, "conv2", s3, 1, 2), v, "bn3", False))
            expected = conv(h, "conv3") + conv(pre, "downsample_0", 2)
        else:
            h = layers.relu(_bn(conv(x, "conv1", s1), v, "bn1", False))
            h = layers.relu(_bn(conv(h, "conv2", s3, 1, 2), v, "bn2", False))
            expected = layers.relu(_bn(conv(h, "conv3"), v, "bn3", False)
                                   + _bn(conv(x, "downsample_0", 2), v, "downsample_1", False))
        return block.apply(v, x, train=False), expected

    y, expected = run(x, v)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_basic_block_v1_is_v15(rng):
    x = _x(rng, (2, 8, 8, 4))
    blocks = {v: R.BasicBlock(8, stride=2, downsample=True, version=v) for v in ("v1", "v1.5")}
    variables = _noisy_variables(blocks["v1"], x, rng)
    run = jax.jit(lambda v, x: [b.apply(v, x, train=False) for b in blocks.values()])
    y1, y15 = run(variables, x)
    np.testing.assert_array_equal(y1, y15)


# With stride 1 and no projection, v1 and v1.5 blocks are the same computation: v1.5 stands for both.
@pytest.mark.parametrize("block, version", [
    (R.BasicBlock(8, zero_init_residual=True), "v1.5"),
    (R.BasicBlock(8, zero_init_residual=True), "v2"),
    (R.Bottleneck(2, zero_init_residual=True), "v1.5"),
    (R.Bottleneck(2, zero_init_residual=True), "v2"),
    (R.Bottleneck(2, zero_init_residual=True, se_reduction=4), "v1.5"),
], ids=["basic-v1.5", "basic-v2", "bottleneck-v1.5", "bottleneck-v2", "se_bottleneck-v1.5"])
def test_zero_init_residual_block_is_identity_then_relu(block, version, rng):
    block = block.clone(version=version)
    x = _x(rng, (2, 5, 5, 8))

    @jax.jit
    def run(x):
        variables = block.init(jax.random.key(0), x, train=False)
        train = lambda p: block.apply({**variables, "params": p}, x, train=True, mutable=["batch_stats"])[0]
        grads = jax.grad(lambda p: jnp.sum(train(p) ** 2))(variables["params"])
        return block.apply(variables, x, train=False), train(variables["params"]), variables["params"], grads

    y_eval, y_train, params, grads = run(x)
    expected = x if version == "v2" else layers.relu(x)  # v2 has no ReLU after the addition
    np.testing.assert_array_equal(y_eval, expected)
    np.testing.assert_array_equal(y_train, expected)
    # What is zeroed, and that it still learns: a zero BN scale before a ReLU (v2's last BN) would never get
    # a gradient, so v2 zeroes the last conv instead.
    last = "conv2" if isinstance(block, R.BasicBlock) else "conv3"
    name, leaf = (last, "kernel") if version == "v2" else ("bn" + last[-1], "scale")
    assert not np.any(params[name][leaf])
    assert np.any(grads[name][leaf] != 0)


def test_initialisation_follows_torchvision_and_zero_init_reaches_every_block():
    model = R.ResNet(stage_sizes=(2, 1, 1, 1), variant="cifar", zero_init_residual=True, num_classes=7)
    params = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(jnp.zeros((1, 8, 8, 3)))["params"]
    for block in ("layer1_0", "layer1_1", "layer2_0", "layer3_0", "layer4_0"):
        assert not np.any(params[block]["bn2"]["scale"])
        assert np.all(params[block]["bn1"]["scale"] == 1) and not np.any(params[block]["bn1"]["bias"])
    assert np.all(params["layer2_0"]["downsample_1"]["scale"] == 1) and np.all(params["bn1"]["scale"] == 1)
    kernel = params["layer4_0"]["conv2"]["kernel"]  # [3, 3, 512, 512]: fan_out = 9 * 512, 2.4M samples
    assert kernel.shape == (3, 3, 512, 512)
    np.testing.assert_allclose(float(jnp.std(kernel)), np.sqrt(2 / (9 * 512)), rtol=0.01)
    assert abs(float(jnp.mean(kernel))) < 0.01 * np.sqrt(2 / (9 * 512))
    assert "bias" not in params["conv1"] and "bias" not in params["layer1_0"]["conv2"]
    bound = 1 / np.sqrt(512)  # torch Linear default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
    assert params["fc"]["kernel"].shape == (512, 7)
    assert 0.9 * bound < float(jnp.max(jnp.abs(params["fc"]["kernel"]))) <= bound
    assert float(jnp.max(jnp.abs(params["fc"]["bias"]))) <= bound


# ------------------------------------------------------------------------------------------------
# Squeeze-and-excitation
# ------------------------------------------------------------------------------------------------

def test_squeeze_excitation_matches_formula(rng):
    x = _x(rng, (2, 3, 3, 32))
    se = R.SqueezeExcitation(reduction=8)
    p = {"fc1": {"kernel": _x(rng, (1, 1, 32, 4)), "bias": _x(rng, (4,))},
         "fc2": {"kernel": _x(rng, (1, 1, 4, 32)), "bias": _x(rng, (32,))}}
    shapes = jax.eval_shape(lambda x: se.init(jax.random.key(0), x), x)["params"]
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, p)
    y = jax.jit(lambda p, x: se.apply({"params": p}, x))(p, x)
    x64 = np.asarray(x, np.float64)
    squeezed = x64.mean(axis=(1, 2))  # [N, C]
    hidden = np.maximum(squeezed @ np.asarray(p["fc1"]["kernel"][0, 0]) + np.asarray(p["fc1"]["bias"]), 0)
    gate = 1 / (1 + np.exp(-(hidden @ np.asarray(p["fc2"]["kernel"][0, 0]) + np.asarray(p["fc2"]["bias"]))))
    np.testing.assert_allclose(y, x64 * gate[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_se_resnet_reduction_option():
    def params(name, **options):
        model = models.create(name, variant="cifar", **options)
        return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]

    p = params("se_resnet18", reduction=4)
    assert p["layer1_0"]["se"]["fc1"]["kernel"].shape == (1, 1, 64, 16)
    assert p["layer4_1"]["se"]["fc2"]["kernel"].shape == (1, 1, 128, 512)
    # Each SE unit adds C * C/r * 2 weights + C/r + C biases; ResNet-18 has 2 blocks of each width.
    extra = sum(2 * (2 * c * (c // 4) + c // 4 + c) for c in (64, 128, 256, 512))
    assert count(p) - count(params("resnet18")) == extra


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options, error, match", [
    ("resnet18", {"version": "v3"}, ValueError, r"resnet18: unknown version 'v3'; expected one of \('v1', 'v1.5', 'v2'\)"),
    ("resnet50", {"variant": "mnist"}, ValueError, r"resnet50: unknown variant 'mnist'; expected one of \('imagenet', 'cifar'\)"),
    ("resnet34", {"zero_init_residual": 1}, TypeError, r"resnet34: zero_init_residual must be a Python bool .* got int 1"),
    ("se_resnet50", {"reduction": 0}, ValueError, r"se_resnet50: reduction must be an int >= 1, got 0"),
    ("resnext50_32x4d", {"num_classes": 0}, ValueError, r"resnext50_32x4d: num_classes must be an int >= 1, got 0"),
    ("resnet18", {"groups": 32}, ValueError, r"does not take option\(s\) \['groups'\]"),
])
def test_bad_options(name, options, error, match):
    with pytest.raises(error, match=match):
        models.create(name, **options)


def test_bad_resnet_arguments():
    with pytest.raises(ValueError, match=r"resnet: depth must be one of \[18, 34, 50, 101, 152\], got 20"):
        R.resnet(20, name="resnet")
    with pytest.raises(ValueError, match=r"resnet18: basic blocks support only groups=1, width_per_group=64"):
        R.resnet(18, groups=32, width_per_group=4)
