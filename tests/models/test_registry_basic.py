"""Registry and the simpler architectures (mlp, lenet5, alexnet, vgg*, nin): exact parameter counts,
torchvision names, output shapes in train and eval mode, one jit-compiled SGD step each, errors.

Shapes and parameter counts of the ImageNet-size networks come from `jax.eval_shape` (no compute, no
allocation); real forward passes and training steps run on the 32x32 / 28x28 variants so that the file
stays fast on a 2-core CPU (an ImageNet-size VGG step would allocate ~2 GB and take minutes there).
"""
import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import layers, models
from jaxnets import nn as jnn
from jaxnets.cost import summary

MINE = ["alexnet", "lenet5", "mlp", "nin", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
        "vgg19", "vgg19_bn"]

# Input size each variant is meant for.
SIZES = {"imagenet": (224, 224, 3), "cifar": (32, 32, 3), "mnist": (28, 28, 1)}


def _variants(name):
    if name in ("mlp", "lenet5"):
        return ["mnist"]
    if name == "nin":
        return ["cifar"]
    return ["imagenet", "cifar"]


def _abstract_init(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _count(tree):
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def test_available_lists_every_model():
    assert set(MINE) <= set(models.available())
    assert models.available() == sorted(models.available())


# torchvision's published counts (1000 classes); ours for the CIFAR/MNIST networks, from their layer lists.
COUNTS = [
    ("alexnet", {}, 61_100_840),
    ("vgg11", {}, 132_863_336),
    ("vgg13", {}, 133_047_848),
    ("vgg16", {}, 138_357_544),
    ("vgg19", {}, 143_667_240),
    ("vgg11_bn", {}, 132_868_840),
    ("vgg13_bn", {}, 133_053_736),
    ("vgg16_bn", {}, 138_365_992),
    ("vgg16", dict(batch_norm=True), 138_365_992),
    ("vgg19_bn", {}, 143_678_248),
    ("alexnet", dict(variant="cifar"), 5_671_754),
    ("vgg16", dict(variant="cifar"), 14_719_818),   # conv stack 14,714,688 + Dense 512 -> 10
    ("lenet5", {}, 61_706),
    ("nin", {}, 966_986),
    ("mlp", {}, 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10),
    ("mlp", dict(batch_norm_layers=1), 784 * 512 + 2 * 512 + 512 * 256 + 256 + 256 * 10 + 10),
]


@pytest.mark.parametrize("name,opts,expected", COUNTS, ids=[f"{n}-{o}" for n, o, _ in COUNTS])
def test_parameter_counts(name, opts, expected):
    model = models.create(name, **opts)
    variant = opts.get("variant", _variants(name)[0])
    variables = _abstract_init(model, (1, *SIZES[variant]))
    assert _count(variables["params"]) == expected


def test_torchvision_names():
    params = _abstract_init(models.create("alexnet"), (1, 224, 224, 3))["params"]
    assert set(params) == {"features_0", "features_3", "features_6", "features_8", "features_10",
                           "classifier_1", "classifier_4", "classifier_6"}
    assert params["features_0"]["kernel"].shape == (11, 11, 3, 64)
    assert params["classifier_1"]["kernel"].shape == (9216, 4096)
    v = _abstract_init(models.create("vgg16_bn"), (1, 224, 224, 3))
    convs = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]  # torchvision's vgg16_bn features indices
    assert set(v["params"]) == ({f"features_{i}" for i in convs} | {f"features_{i + 1}" for i in convs}
                                | {"classifier_0", "classifier_3", "classifier_6"})
    assert set(v["batch_stats"]) == {f"features_{i + 1}" for i in convs}
    assert set(v["params"]["features_0"]) == {"kernel", "bias"}  # torchvision keeps the conv bias before BN
    assert set(v["batch_stats"]["features_1"]) == {"mean", "var"}
    lenet = _abstract_init(models.create("lenet5"), (1, 28, 28, 1))["params"]
    assert set(lenet) == {"features_0", "features_3", "classifier_0", "classifier_2", "classifier_4"}
    assert lenet["classifier_0"]["kernel"].shape == (400, 120)


def test_documented_intermediate_shapes():
    rows = {r.name: r.output_shape for r in summary(models.create("lenet5"), (28, 28, 1)).rows}
    assert rows["features_0"] == (1, 28, 28, 6) and rows["features_2"] == (1, 14, 14, 6)
    assert rows["features_3"] == (1, 10, 10, 16) and rows["features_5"] == (1, 5, 5, 16)
    rows = {r.name: r.output_shape for r in summary(models.create("nin"), (32, 32, 3)).rows}
    assert rows["features_6"] == (1, 16, 16, 96)   # ceil_mode: (32 - 3) / 2 + 1 = 15.5 -> 16
    assert rows["features_14"] == (1, 8, 8, 192)
    assert rows["features_22"] == (1, 10)
    rows = {r.name: r.output_shape for r in summary(models.create("alexnet", variant="cifar"), (32, 32, 3)).rows}
    assert rows["features_2"] == (1, 15, 15, 64) and rows["features_5"] == (1, 7, 7, 192)
    assert rows["features_12"] == (1, 3, 3, 256)


CASES = [(name, variant) for name in MINE for variant in _variants(name)]


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_output_shapes_train_and_eval(name, variant):
    model = models.create(name, variant=variant, num_classes=7)
    x = jax.ShapeDtypeStruct((2, *SIZES[variant]), jnp.float32)
    variables = _abstract_init(model, x.shape)
    eval_out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    train_out, updates = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}),
        variables, x)
    assert eval_out.shape == train_out.shape == (2, 7)
    assert eval_out.dtype == jnp.float32
    assert jax.tree.structure(updates.get("batch_stats", {})) == jax.tree.structure(variables.get("batch_stats", {}))


def test_default_num_classes():
    for name, variant, classes in (("alexnet", "imagenet", 1000), ("alexnet", "cifar", 10), ("vgg11", "cifar", 10),
                                   ("lenet5", "mnist", 10)):
        model = models.create(name, variant=variant)
        out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False),
                             _abstract_init(model, (1, *SIZES[variant])),
                             jax.ShapeDtypeStruct((1, *SIZES[variant]), jnp.float32))
        assert out.shape == (1, classes)


# ImageNet-size networks train on their CIFAR variant here (same code, 49x fewer pixels); their ImageNet
# forward and backward graphs are checked with eval_shape above.
STEP_CASES = [(name, _variants(name)[-1]) for name in MINE]

# These tests are bound by XLA's CPU compile time, not by compute: skip LLVM's expensive passes.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _numpy_variables(abstract, rng):
    """Concrete variables for the shapes of `abstract`, drawn on the host: kernels He-scaled normals, biases and
    BN shifts 0, BN scales and running variances 1, running means 0.

    A jitted `model.init` costs several seconds of XLA compile per VGG on a CPU (one threefry kernel per
    parameter); the initializers themselves are tested in tests/nn and by `test_vgg_initialisation_is_torchvisions`.
    """
    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in), jnp.float32)
        return jnp.ones(leaf.shape, leaf.dtype) if name in ("scale", "var") else jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize("name,variant", STEP_CASES, ids=[f"{n}-{v}" for n, v in STEP_CASES])
def test_one_jit_training_step(name, variant, rng):
    opts = dict(batch_norm_layers=1, dropout=0.1) if name == "mlp" else {}
    model = models.create(name, variant=variant, **opts)
    x = jnp.asarray(rng.standard_normal((2, *SIZES[variant])), jnp.float32)
    labels = jnp.array([1, 3])
    variables = _numpy_variables(_abstract_init(model, x.shape), rng)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.sgd(0.01)
    opt_state = tx.init(params)

    def step(params, stats, opt_state, key):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": key})
            return layers.cross_entropy(logits, labels), (logits, upd.get("batch_stats", {}))

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss, logits

    step = jax.jit(step, compiler_options=FAST_COMPILE)
    new_params, new_stats, _, loss, logits = step(params, stats, opt_state, jax.random.key(1))
    assert logits.shape == (2, 10)
    assert np.isfinite(float(loss)) and float(loss) > 0
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, new_params))
    assert sum(changed) >= len(changed) // 2  # the gradient reaches most parameters
    if stats:  # BN models: the running statistics moved
        assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, new_stats)))


def test_vgg_initialisation_is_torchvisions():
    model = models.create("vgg11", variant="cifar")
    # Only the returned leaves are computed: XLA drops the rest of the init (and its compile time).
    wanted = ("features_11", "classifier")
    params = jax.jit(lambda k, x: {n: model.init(k, x, train=False)["params"][n] for n in wanted})(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    k = np.asarray(params["features_11"]["kernel"])  # 3x3, 256 -> 512: fan_out = 9 * 512
    assert k.shape == (3, 3, 256, 512)
    np.testing.assert_allclose(k.std(), np.sqrt(2 / (9 * 512)), rtol=0.01)  # 1.2M samples: std error 0.06%
    assert abs(k.mean()) < 1e-4
    assert not np.any(params["features_11"]["bias"])
    d = np.asarray(params["classifier"]["kernel"])
    np.testing.assert_allclose(d.std(), 0.01, rtol=0.1)  # 5,120 samples: std error 1%
    assert not np.any(params["classifier"]["bias"])


def test_mlp_structure():
    model = models.create("mlp", hidden=(32, 16, 8), batch_norm_layers=2, activation="tanh")
    v = _abstract_init(model, (2, 28, 28, 1))
    assert set(v["params"]) == {"dense_0", "bn_0", "dense_1", "bn_1", "dense_2", "head"}
    assert "bias" not in v["params"]["dense_0"] and "bias" in v["params"]["dense_2"]
    # Any input shape: flattened first.
    assert _abstract_init(models.create("mlp", hidden=(4,)), (2, 5))["params"]["dense_0"]["kernel"].shape == (5, 4)


@pytest.mark.parametrize("call,match", [
    (lambda: models.create("resnet9000"), r"create: unknown model 'resnet9000'; available: .*alexnet"),
    (lambda: models.create("alexnet", depth=3), r"create: model 'alexnet' does not take option\(s\) \['depth'\]"),
    (lambda: models.create("alexnet", variant="mnist"),
     r"alexnet: unknown variant 'mnist'; expected one of \('imagenet', 'cifar'\)"),
    (lambda: models.create("nin", variant="imagenet"), r"nin: unknown variant 'imagenet'; expected one of \('cifar',\)"),
    (lambda: models.create("vgg16", num_classes=0), r"vgg16: num_classes must be an int >= 1, got 0"),
    (lambda: models.create("mlp", hidden=()), r"mlp: hidden must be a non-empty sequence of positive ints"),
    (lambda: models.create("mlp", hidden=(8,), batch_norm_layers=2),
     r"mlp: batch_norm_layers must be an int in \[0, 1\], got 2"),
    (lambda: models.create("mlp", activation="swish"), r"get_activation: unknown nonlinearity 'swish'"),
    (lambda: models.register("alexnet")(lambda: None), r"register: the name 'alexnet' is already registered"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_vgg_batch_norm_must_be_bool():
    with pytest.raises(TypeError, match=r"vgg11: batch_norm must be a Python bool .* got str 'yes'"):
        models.create("vgg11", batch_norm="yes")


def test_axis_name_reaches_batchnorm():
    model = models.create("vgg11_bn", variant="cifar", axis_name="devices")
    bns = []

    def spy(next_fun, args, kwargs, context):
        if isinstance(context.module, jnn.BatchNorm):
            bns.append(context.module.axis_name)
        return next_fun(*args, **kwargs)

    with flax_nn.intercept_methods(spy):
        _abstract_init(model, (2, 32, 32, 3))
    assert len(bns) == 8 and set(bns) == {"devices"}


def test_vgg_config_builds_a_stack_of_your_own():
    """`VGG(config=...)` (torchvision's `VGG(make_layers(cfg))`): depth 11's configuration gives vgg11's
    parameters exactly; a bad entry is refused by name."""
    from jaxnets.models.vgg import CONFIGS, VGG

    x = jnp.zeros((1, 32, 32, 3))
    shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False)))
    mine = VGG(config=CONFIGS[11], batch_norm=True, variant="cifar", num_classes=10)
    assert shapes(mine) == shapes(models.create("vgg11_bn", variant="cifar", num_classes=10))
    small = VGG(config=(4, "M", 8, "M"), variant="cifar", num_classes=10)
    assert {k: v.shape for k, v in small.init(jax.random.key(0), x, train=False)["params"]["features_3"].items()} \
        == {"bias": (8,), "kernel": (3, 3, 4, 8)}
    with pytest.raises(ValueError, match=r"VGG: config must be a non-empty sequence of conv widths \(ints >= 1\) "
                                         r"and 'M' \(a max pool\), got \(4, 'X'\)"):
        VGG(config=(4, "X"), variant="cifar").init(jax.random.key(0), x, train=False)
