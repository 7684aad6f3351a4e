"""jaxnets.models.registry: registering again (notebooks), unregister, defaults, no import cycle, and the
error rule of every model constructor (a wrong type -> TypeError, a wrong value -> ValueError, naming the option)."""
import pathlib
import subprocess
import sys

import pytest

from jaxnets import models
from jaxnets.models import registry
from jaxnets.models.lenet import LeNet5


@pytest.fixture
def temporary():
    """Names registered by a test are removed afterwards."""
    names = []
    yield names
    for name in names:
        if name in models.available():
            models.unregister(name)


def _make_factory(classes):
    def tiny(*, num_classes: int = classes):  # the same __qualname__ ("_make_factory.<locals>.tiny") every time
        return LeNet5(num_classes=num_classes)

    return tiny


def test_registering_the_same_factory_again_replaces_it(temporary):
    """A notebook cell run twice defines a new function object with the same qualified name: no error."""
    temporary.append("test_tiny")
    models.register("test_tiny")(_make_factory(3))
    models.register("test_tiny")(_make_factory(4))
    assert models.create("test_tiny").num_classes == 4


def test_a_different_factory_needs_replace(temporary):
    temporary.append("test_tiny")
    models.register("test_tiny")(_make_factory(3))

    def other(*, num_classes: int = 7):
        return LeNet5(num_classes=num_classes)

    with pytest.raises(ValueError, match=r"register: the name 'test_tiny' is already registered \(by "
                                         r".*test_registry._make_factory.<locals>.tiny\); pass "
                                         r"register\('test_tiny', replace=True\) to replace it with "
                                         r".*test_registry.test_a_different_factory_needs_replace.<locals>.other"):
        models.register("test_tiny")(other)
    assert models.create("test_tiny").num_classes == 3  # unchanged by the refused registration
    models.register("test_tiny", replace=True)(other)
    assert models.create("test_tiny").num_classes == 7
    with pytest.raises(ValueError, match=r"register: the name 'resnet18' is already registered"):
        models.register("resnet18")(other)


def test_unregister(temporary):
    models.register("test_tiny")(_make_factory(3))
    assert "test_tiny" in models.available()
    models.unregister("test_tiny")
    assert "test_tiny" not in models.available()
    with pytest.raises(ValueError, match=r"unregister: unknown model 'test_tiny'; available: alexnet"):
        models.unregister("test_tiny")


def test_register_errors():
    with pytest.raises(TypeError, match=r"register: name must be a non-empty string, got int 3"):
        models.register(3)
    with pytest.raises(ValueError, match=r"register: name must be a non-empty string, got ''"):
        models.register("")
    with pytest.raises(TypeError, match=r"register: replace must be a Python bool"):
        models.register("x", replace=1)
    with pytest.raises(TypeError, match=r"register: 'x' must be registered with a callable .* got int"):
        models.register("x")(5)
    with pytest.raises(TypeError, match=r"create: the model name must be a string, got int 5"):
        models.create(5)


def test_defaults():
    assert models.defaults("lenet5") == {"num_classes": None, "variant": "mnist", "axis_name": None}
    assert models.defaults("resnet18")["version"] == "v1.5"
    with pytest.raises(ValueError, match=r"defaults: unknown model 'resnet19'"):
        models.defaults("resnet19")


@pytest.mark.slow
def test_no_import_cycle():
    """Each model file imports the registry, not the package: importing one first works, and the package's
    __init__ imports its submodules at the top (no `noqa: E402`)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    for module in ("jaxnets.models.vgg", "jaxnets.models.registry", "jaxnets.models.port"):
        code = f"import {module}, jaxnets.models as m; assert 'vgg16' in m.available() and m.from_torch"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root),
                                                                               "JAX_PLATFORMS": "cpu"})
    source = (root / "jaxnets" / "models" / "__init__.py").read_text()
    assert "E402" not in source


def test_shared_option_checks():
    assert registry.check_variant("m", "cifar", ("imagenet", "cifar")) == "cifar"
    with pytest.raises(TypeError, match=r"m: variant must be a string, one of \('cifar',\), got int 3"):
        registry.check_variant("m", 3, ("cifar",))
    assert registry.default_classes("m", None, "imagenet") == 1000
    assert registry.default_classes("m", None, "cifar") == 10
    assert registry.check_rate("m", "dropout", 0) == 0.0
    with pytest.raises(ValueError, match=r"m: dropout must be a finite real number in \[0.0, 1.0\), got 1.0"):
        registry.check_rate("m", "dropout", 1.0)


# (model, options, exception, message): int options reject 1.5 and True with TypeError, bad values with ValueError.
BAD_OPTIONS = [
    ("resnet18", dict(num_classes=1.5), TypeError, r"resnet18: num_classes must be an int >= 1, got float 1.5"),
    ("resnet18", dict(num_classes=True), TypeError, r"resnet18: num_classes must be an int >= 1, got bool True"),
    ("resnet18", dict(num_classes=0), ValueError, r"resnet18: num_classes must be an int >= 1, got 0"),
    ("resnet18", dict(version="v3"), ValueError, r"resnet18: unknown version 'v3'; expected one of \('v1'"),
    ("resnet18", dict(variant=1), TypeError, r"resnet18: variant must be a string"),
    ("resnet18", dict(zero_init_residual=1), TypeError, r"resnet18: zero_init_residual must be a Python bool"),
    ("se_resnet18", dict(reduction=True), TypeError, r"se_resnet18: reduction must be an int >= 1, got bool"),
    ("se_resnet18", dict(reduction=0), ValueError, r"se_resnet18: reduction must be an int >= 1, got 0"),
    ("vgg11", dict(num_classes=2.0), TypeError, r"vgg11: num_classes must be an int >= 1, got float 2.0"),
    ("vgg11", dict(dropout=1.0), ValueError, r"vgg11: dropout must be a finite real number in \[0.0, 1.0\)"),
    ("vgg11", dict(dropout="0.5"), TypeError, r"vgg11: dropout must be a real number"),
    ("vgg11", dict(batch_norm=1), TypeError, r"vgg11: batch_norm must be a Python bool"),
    ("alexnet", dict(dropout=True), TypeError, r"alexnet: dropout must be a real number .* got bool True"),
    ("alexnet", dict(variant="mnist"), ValueError, r"alexnet: unknown variant 'mnist'"),
    ("nin", dict(dropout=-0.1), ValueError, r"nin: dropout must be a finite real number in \[0.0, 1.0\)"),
    ("lenet5", dict(num_classes=True), TypeError, r"lenet5: num_classes must be an int >= 1, got bool True"),
    ("mlp", dict(hidden=(8, 1.5)), TypeError, r"mlp: hidden\[1\] must be an int >= 1, got float 1.5"),
    ("mlp", dict(hidden=(8, 0)), ValueError, r"mlp: hidden\[1\] must be an int >= 1, got 0"),
    ("mlp", dict(hidden=8), TypeError, r"mlp: hidden must be a sequence of ints such as \(512, 256\), got int 8"),
    ("mlp", dict(hidden=()), ValueError, r"mlp: hidden must be a non-empty sequence of positive ints"),
    ("mlp", dict(batch_norm_layers=True), TypeError, r"mlp: batch_norm_layers must be an int in \[0, 2\], got bool"),
    ("mlp", dict(batch_norm_layers=3), ValueError, r"mlp: batch_norm_layers must be an int in \[0, 2\], got 3"),
    ("googlenet", dict(aux_logits="yes"), TypeError, r"googlenet: aux_logits must be a Python bool"),
    ("googlenet", dict(dropout_aux=1.5), ValueError, r"googlenet: dropout_aux must be a finite real number"),
    ("googlenet", dict(num_classes=10.0), TypeError, r"googlenet: num_classes must be an int >= 1, got float"),
]


@pytest.mark.parametrize("name, options, error, match", BAD_OPTIONS,
                         ids=[f"{n}-{next(iter(o))}-{e.__name__}" for n, o, e, _ in BAD_OPTIONS])
def test_constructor_options_follow_the_error_rule(name, options, error, match):
    with pytest.raises(error, match=match):
        models.create(name, **options)


@pytest.mark.parametrize("depth, error, match", [
    (1.5, TypeError, r"resnet: depth must be an int, one of \[18, 34, 50, 101, 152\], got float 1.5"),
    (True, TypeError, r"resnet: depth must be an int, one of .* got bool True"),
    (20, ValueError, r"resnet20: depth must be one of \[18, 34, 50, 101, 152\], got 20"),
])
def test_resnet_depth(depth, error, match):
    from jaxnets.models.resnet import resnet

    with pytest.raises(error, match=match):
        resnet(depth)


@pytest.mark.parametrize("depth, error, match", [
    (16.0, TypeError, r"vgg: depth must be an int, one of \[11, 13, 16, 19\], got float 16.0"),
    (False, TypeError, r"vgg: depth must be an int, one of .* got bool False"),
    (12, ValueError, r"vgg: depth must be one of \[11, 13, 16, 19\], got 12"),
])
def test_vgg_depth(depth, error, match):
    from jaxnets.models.vgg import vgg

    with pytest.raises(error, match=match):
        vgg(depth)


def test_resnext_groups():
    from jaxnets.models.resnet import resnet

    with pytest.raises(TypeError, match=r"resnet50: groups must be an int >= 1, got bool True"):
        resnet(50, groups=True)
    with pytest.raises(ValueError, match=r"resnet50: width_per_group must be an int >= 1, got 0"):
        resnet(50, width_per_group=0)
    with pytest.raises(TypeError, match=r"resnet50: se_reduction must be an int >= 1, got float 2.5"):
        resnet(50, se_reduction=2.5)
