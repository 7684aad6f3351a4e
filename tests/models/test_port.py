"""jaxnets.models.port.from_torch: PyTorch networks written here with torchvision's structure and module
names (torch only, no torchvision), random weights AND random BatchNorm running statistics, ported with
`from_torch`; eval-mode logits must agree to 1e-4 (NCHW torch input vs NHWC jax input). Plus the
error messages for missing/unexpected keys and shape mismatches. Then a user's own torch CNN (not in the
registry) ported into its jaxnets.nn twin, NHWC and NCHW, `rename=`, and the argument errors."""
import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from _tolerances import FLOAT32_DEEP_NETWORK
from benchmarks.torch_baselines import LeNet5 as TorchLeNet5
from benchmarks.torch_baselines import ResNet18 as TorchResNet18
from benchmarks.torch_baselines import VGG11BN as TorchVGG11BNCifar
from jaxnets import models
from jaxnets import nn as jnn
from jaxnets.models.port import from_torch

torch.manual_seed(0)
# float32 end to end; the differences come from summation order (ResNet-18: ~20 convs deep).
TOL = FLOAT32_DEEP_NETWORK


# ------------------------------------------------------------------------------------------------
# Torch networks with torchvision's module names
# ------------------------------------------------------------------------------------------------

class TorchBasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(nn.Module):
    def __init__(self, cin, ch1, ch3r, ch3, ch5r, ch5, pool):
        super().__init__()
        self.branch1 = TorchBasicConv2d(cin, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(TorchBasicConv2d(cin, ch3r, kernel_size=1),
                                     TorchBasicConv2d(ch3r, ch3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(TorchBasicConv2d(cin, ch5r, kernel_size=1),
                                     TorchBasicConv2d(ch5r, ch5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), TorchBasicConv2d(cin, pool, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchInceptionAux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv = TorchBasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)


class TorchGoogLeNet(nn.Module):
    """torchvision.models.GoogLeNet(aux_logits=True, transform_input=False), eval-mode forward."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = TorchBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = TorchBasicConv2d(64, 64, kernel_size=1)
        self.conv3 = TorchBasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = TorchInception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = TorchInception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = TorchInception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = TorchInception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = TorchInception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = TorchInception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = TorchInception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = TorchInception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = TorchInception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = TorchInceptionAux(512, num_classes)
        self.aux2 = TorchInceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):  # eval mode: the auxiliary heads are not used
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4d(self.inception4c(self.inception4b(self.inception4a(x))))
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def randomised(net: nn.Module) -> nn.Module:
    """Random weights (torch's default init) and random BN affine parameters and running statistics;
    eval mode. The BN statistics are drawn so that activations keep a moderate scale through the depth."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return net.eval()


def compare(name, torch_net, x_nchw, **options):
    """Port `torch_net` into the registry model `name` and compare eval-mode logits."""
    variables = from_torch(name, torch_net.state_dict(), **options)
    model = models.create(name, **options)
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(x_nchw)).numpy()
    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)))
    assert np.abs(expected).max() > 0.1  # a non-degenerate comparison
    np.testing.assert_allclose(np.asarray(got), expected, **TOL)
    return variables


def _images(rng, n, c, size):
    return rng.standard_normal((n, c, size, size)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Parity
# ------------------------------------------------------------------------------------------------

def test_resnet18_imagenet(rng):
    net = randomised(TorchResNet18("imagenet", num_classes=1000))
    # 64x64 is enough for every layer of the ImageNet stem (64 -> 32 -> 16 -> ... -> 2); the variables are
    # built for 224x224 (they do not depend on the input size).
    variables = compare("resnet18", net, _images(rng, 2, 3, 64))
    assert set(variables) == {"params", "batch_stats"}
    np.testing.assert_array_equal(variables["batch_stats"]["layer2_0"]["downsample_1"]["var"],
                                  net.layer2[0].downsample[1].running_var.numpy())


def test_resnet18_cifar(rng):
    compare("resnet18", randomised(TorchResNet18("cifar", num_classes=10)), _images(rng, 2, 3, 32), variant="cifar")


def test_lenet5(rng):
    variables = compare("lenet5", randomised(TorchLeNet5()), _images(rng, 2, 1, 28))
    assert set(variables) == {"params"}  # no BatchNorm, no batch_stats


def test_vgg11_bn_cifar(rng):
    compare("vgg11_bn", randomised(TorchVGG11BNCifar()), _images(rng, 2, 3, 32), variant="cifar")


def test_googlenet_imagenet_with_aux_heads(rng):
    # 80x80: conv1 -> 40, then ceil-mode pools 40 -> 20 -> 10 -> 5 -> 3 ((5 - 2) / 2 + 1 = 2.5 -> 3).
    net = randomised(TorchGoogLeNet(num_classes=12))
    variables = compare("googlenet", net, _images(rng, 2, 3, 80), num_classes=12, aux_logits=True)
    np.testing.assert_array_equal(variables["params"]["aux2"]["fc1"]["kernel"], net.aux2.fc1.weight.detach().numpy().T)


def test_kernel_layouts():
    net = TorchLeNet5()
    state = {k: v.numpy() for k, v in net.state_dict().items()}  # numpy values
    p = from_torch("lenet5", state, input_shape=(28, 28, 1))["params"]
    w = net.features[3].weight.detach().numpy()  # [16, 6, 5, 5] OIHW
    np.testing.assert_array_equal(p["features_3"]["kernel"], w.transpose(2, 3, 1, 0))  # HWIO
    np.testing.assert_array_equal(p["classifier_0"]["kernel"], net.classifier[0].weight.detach().numpy().T)
    assert p["classifier_0"]["kernel"].dtype == jnp.float32


@pytest.mark.parametrize("name, options", [
    ("mlp", dict(batch_norm_layers=1)), ("nin", {}), ("alexnet", dict(variant="cifar")),
    ("resnext50_32x4d", dict(variant="cifar")), ("se_resnet18", dict(variant="cifar")),
    ("resnet50", dict(variant="cifar", version="v2")),
])
def test_round_trip_of_every_variable(name, options, rng):
    """A state_dict written from the model's own variable tree (torch layouts, "." between modules) is read
    back exactly: every layer kind of the registry maps (grouped convs, SE biases, v2's bn_final, BN1d)."""
    model = models.create(name, **options)
    size = (28, 28, 1) if name == "mlp" else (32, 32, 3)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct((1, *size), jnp.float32))
    torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    values, state = {}, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        keys = tuple(p.key for p in path)
        values[keys] = rng.standard_normal(leaf.shape).astype(np.float32)
        w = values[keys]
        if keys[-1] == "kernel":  # channels-last kernel -> PyTorch's [out, in, *spatial]
            w = np.transpose(w, (w.ndim - 1, w.ndim - 2, *range(w.ndim - 2)))
        state[".".join(keys[1:-1]) + "." + torch_leaf[keys[-1]]] = torch.from_numpy(w)
    ported = from_torch(name, state, **options)  # input shape from the variant (nin: "cifar" by default)
    flat = {tuple(p.key for p in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(ported)[0]}
    assert flat.keys() == values.keys()
    for keys, v in values.items():
        np.testing.assert_array_equal(flat[keys], v)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

def test_missing_unexpected_and_mismatched_keys_are_listed():
    state = dict(TorchLeNet5().state_dict())
    del state["features.3.bias"]
    state["features.9.weight"] = torch.zeros(3)
    state["classifier.4.weight"] = torch.zeros(7, 84)
    with pytest.raises(ValueError, match=r"from_torch: the state_dict does not fit model 'lenet5'") as info:
        from_torch("lenet5", state)
    message = str(info.value)
    assert ("model variables missing from the state_dict (1): params/features_3/bias <- torch 'features_3.bias' "
            "('.' = '_')") in message
    assert "unexpected torch keys (1): features.9.weight" in message
    assert ("shape mismatches (1): classifier.4.weight: torch (7, 84) -> converted (84, 7) but "
            "params/classifier_4/kernel needs (84, 10)") in message


def test_wrong_options_for_the_checkpoint():
    state = TorchResNet18("cifar", num_classes=10).state_dict()
    with pytest.raises(ValueError, match=r"shape mismatches \(3\): conv1.weight: torch \(64, 3, 3, 3\) -> converted "
                                         r"\(3, 3, 3, 64\) but params/conv1/kernel needs \(7, 7, 3, 64\), fc.bias: "
                                         r"torch \(10,\) -> converted \(10,\) but params/fc/bias needs \(1000,\)"):
        from_torch("resnet18", state)  # the checkpoint is the CIFAR variant with 10 classes
    with pytest.raises(ValueError, match=r"missing from the state_dict \(165\): params/layer1_0/bn3/bias "
                                         r".*params/layer1_0/conv3/kernel"):
        from_torch("resnet50", state, variant="cifar")


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"from_torch: state_dict must be a mapping .* got list"):
        from_torch("lenet5", [1, 2])
    with pytest.raises(ValueError, match=r"create: unknown model 'resnet19'"):
        from_torch("resnet19", {})


# ------------------------------------------------------------------------------------------------
# Any Flax module: a custom torch CNN ported into its jaxnets.nn twin, NHWC and NCHW
# ------------------------------------------------------------------------------------------------

class TorchSmallCNN(nn.Module):
    """conv+BN+ReLU+pool, twice, then a Linear: a user's own network, not in the registry."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.head = nn.Linear(6 * 2 * 2, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class SmallCNN(flax_nn.Module):
    """TorchSmallCNN in jaxnets.nn, submodule names = torch's paths with '.' -> '_'."""

    layout: str = "NHWC"

    @flax_nn.compact
    def __call__(self, x, *, train):
        lay = dict(layout=self.layout)
        x = jnn.Conv(8, 3, padding=1, name="features_0", **lay)(x)
        x = jnn.MaxPool(2, **lay)(jnn.ReLU()(jnn.BatchNorm(name="features_1", **lay)(x, train=train)))
        x = jnn.Conv(6, 3, padding=1, use_bias=False, name="features_4", **lay)(x)
        x = jnn.MaxPool(2, **lay)(jnn.ReLU()(jnn.BatchNorm(name="features_5", **lay)(x, train=train)))
        return jnn.Dense(5, name="head")(jnn.Flatten(**lay)(x))


@pytest.fixture
def small_cnn():
    return randomised(TorchSmallCNN())


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_custom_module_parity(layout, small_cnn, rng):
    x = _images(rng, 3, 3, 8)  # NCHW
    with torch.no_grad():
        expected = small_cnn(torch.from_numpy(x)).numpy()
    nhwc = layout == "NHWC"
    variables = from_torch(SmallCNN(layout), small_cnn.state_dict(), input_shape=(8, 8, 3) if nhwc else (3, 8, 8))
    kernel = variables["params"]["features_0"]["kernel"]
    weight = small_cnn.features[0].weight.detach().numpy()
    # NHWC: HWIO (transposed); NCHW: jnn.Conv keeps PyTorch's OIHW, taken unchanged.
    np.testing.assert_array_equal(kernel, weight.transpose(2, 3, 1, 0) if nhwc else weight)
    got = SmallCNN(layout).apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1) if nhwc else x), train=False)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)  # float32


def test_custom_module_square_kernel_is_not_transposed_in_nchw():
    """O = I = kH = kW: the shape cannot tell OIHW from HWIO; the module's layout does."""
    class Square(flax_nn.Module):
        @flax_nn.compact
        def __call__(self, x, *, train):
            return jnn.Conv(3, 3, use_bias=False, layout="NCHW", name="conv")(x)

    w = np.arange(81, dtype=np.float32).reshape(3, 3, 3, 3)
    p = from_torch(Square(), {"conv.weight": w}, input_shape=(3, 5, 5))["params"]
    np.testing.assert_array_equal(p["conv"]["kernel"], w)


def test_rename_mapping_and_function(small_cnn):
    state = small_cnn.state_dict()
    reference = from_torch(SmallCNN(), state, input_shape=(8, 8, 3))
    parallel = {"module." + k: v for k, v in state.items()}  # torch.nn.DataParallel's checkpoint
    other = {k.replace("head.", "classifier."): v for k, v in state.items()}
    extra = {**state, "aux.weight": torch.zeros(2)}
    for sd, rename in ((parallel, {"module.": ""}), (parallel, lambda k: k.removeprefix("module.")),
                       (other, {"classifier": "head"}), (extra, {"aux": None}), (extra, lambda k: None if
                                                                                 k.startswith("aux.") else k)):
        got = from_torch(SmallCNN(), sd, input_shape=(8, 8, 3), rename=rename)
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), got, reference))


def test_rename_prefix_matches_whole_module_names(small_cnn):
    state = {k.replace("head.", "header."): v for k, v in small_cnn.state_dict().items()}
    # "head" must not rename "header.weight": the keys stay unexpected, the message shows both names.
    with pytest.raises(ValueError, match=r"unexpected torch keys \(2\): header.bias, header.weight"):
        from_torch(SmallCNN(), state, input_shape=(8, 8, 3), rename={"head": "fc"})
    with pytest.raises(ValueError, match=r"unexpected torch keys \(1\): features.9.weight \(renamed x.weight\)"):
        from_torch(SmallCNN(), {**small_cnn.state_dict(), "features.9.weight": torch.zeros(1)},
                   input_shape=(8, 8, 3), rename={"features.9": "x"})


def test_mismatch_message_gives_torch_converted_and_needed_shapes():
    # 7 classes for a 5-class module, and 4 input channels: the NCHW conv kernel is compared unchanged.
    with pytest.raises(ValueError) as info:
        from_torch(SmallCNN("NCHW"), TorchSmallCNN(num_classes=7).state_dict(), input_shape=(4, 8, 8))
    message = str(info.value)
    assert message.startswith("from_torch: the state_dict does not fit module SmallCNN: shape mismatches (3): ")
    assert ("features.0.weight: torch (8, 3, 3, 3) -> converted (8, 3, 3, 3) but params/features_0/kernel "
            "needs (8, 4, 3, 3)") in message
    assert "head.bias: torch (7,) -> converted (7,) but params/head/bias needs (5,)" in message
    assert "head.weight: torch (7, 24) -> converted (24, 7) but params/head/kernel needs (24, 5)" in message
    assert "input_shape describes one input" in message


def test_module_that_cannot_be_traced_on_input_shape(small_cnn):
    # An NCHW module given an NHWC input_shape: 3 columns cannot be pooled twice.
    with pytest.raises(ValueError, match=r"from_torch: module SmallCNN cannot be traced on an input of shape "
                                         r"\(1, 8, 8, 3\) \(input_shape=\(8, 8, 3\)\): max_pool: .* Is input_shape "
                                         r"in the module's layout"):
        from_torch(SmallCNN("NCHW"), small_cnn.state_dict(), input_shape=(8, 8, 3))


def test_custom_module_errors(small_cnn):
    state = small_cnn.state_dict()
    with pytest.raises(ValueError, match=r"from_torch: input_shape is required for a module instance \(SmallCNN\)"):
        from_torch(SmallCNN(), state)
    with pytest.raises(ValueError, match=r"from_torch: options \['num_classes'\] are for registry names"):
        from_torch(SmallCNN(), state, input_shape=(8, 8, 3), num_classes=5)
    with pytest.raises(TypeError, match=r"from_torch: input_shape must be a tuple of ints.* got \(8, 8.0, 3\)"):
        from_torch(SmallCNN(), state, input_shape=(8, 8.0, 3))
    with pytest.raises(ValueError, match=r"from_torch: input_shape must be a non-empty tuple of positive ints"):
        from_torch(SmallCNN(), state, input_shape=(8, 0, 3))
    with pytest.raises(TypeError, match=r"from_torch: model must be a registry name \(str\) or a flax.linen.Module "
                                        r"instance, got type"):
        from_torch(SmallCNN, state, input_shape=(8, 8, 3))
    with pytest.raises(TypeError, match=r"from_torch: rename must be None, a mapping .* got list"):
        from_torch(SmallCNN(), state, input_shape=(8, 8, 3), rename=["module."])
    with pytest.raises(TypeError, match=r"from_torch: rename must map torch keys or prefixes \(str\) to new names"):
        from_torch(SmallCNN(), state, input_shape=(8, 8, 3), rename={"head": 3})
    with pytest.raises(TypeError, match=r"from_torch: rename\('head.bias'\) must return a str \(or None"):
        from_torch(SmallCNN(), state, input_shape=(8, 8, 3), rename=lambda k: 0 if k == "head.bias" else k)
    with pytest.raises(ValueError, match=r"from_torch: torch keys 'features.0.weight' and 'head.weight \(renamed "
                                         r"features.0.weight\)' both become 'features_0.weight'"):
        from_torch(SmallCNN(), state, input_shape=(8, 8, 3), rename={"head": "features.0"})
