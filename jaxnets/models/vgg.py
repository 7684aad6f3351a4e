"""VGG (Simonyan & Zisserman, 2014) with and without batch norm: torchvision's ImageNet networks and the
usual CIFAR-10 variant (the same 3x3 conv stack, a single linear classifier)."""

import flax.linen as nn
import jax

from jaxnets import init
from jaxnets import nn as jnn
from jaxnets.checks import check_bool, is_int
from jaxnets.models.registry import check_rate, check_variant, default_classes, register

# torchvision's configurations: output channels of each 3x3 conv, "M" a 2x2 max pool.
CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG-`depth`: blocks of 3x3 convs (padding 1) + ReLU, each block closed by a 2x2 / stride 2 max pool.

    Names follow torchvision's `features.{i}` indices ("features_0", "features_1" (BN) ...): every conv
    takes one index, its BatchNorm (if `batch_norm`) the next, its ReLU the next, a max pool one index.

    variant="imagenet" (`[N, 224, 224, 3]`, exactly torchvision's `vgg{depth}`/`vgg{depth}_bn`):
      features -> "avgpool" AdaptiveAvgPool(7x7) -> flatten (C, H, W: 25088) -> "classifier_0" Dense(4096)
      -> ReLU -> Dropout -> "classifier_3" Dense(4096) -> ReLU -> Dropout -> "classifier_6" Dense(num_classes).
      Parameters (1000 classes): vgg11 132,863,336; vgg13 133,047,848; vgg16 138,357,544; vgg19 143,667,240;
      vgg11_bn 132,868,840; vgg16_bn 138,365,992.
    variant="cifar" (`[N, 32, 32, 3]`): the same conv stack (five pools take 32x32 to 1x1x512) -> flatten
      (512) -> "classifier" Dense(512 -> num_classes); no dropout (the pytorch-cifar layout).

    With `batch_norm=True` the convs KEEP their bias although a BN follows (an exception to the library's
    "no bias before BN" rule, made for parity with torchvision's vgg*_bn parameter counts and weights; the
    bias is redundant under BN's shift).

    `config` replaces the configuration of `depth` by a stack of your own, e.g. `(8, "M", 16, "M")`
    (torchvision: `VGG(make_layers(cfg))`).

    Initialisation (torchvision's VGG): conv kernels He normal with fan_out (`kaiming_normal_(mode="fan_out",
    nonlinearity="relu")`), conv biases 0; BN scale 1, shift 0; Dense kernels normal(0, 0.01), biases 0.
    """

    depth: int = 16
    batch_norm: bool = False
    variant: str = "imagenet"
    num_classes: int = 1000
    dropout: float = 0.5
    axis_name: str | None = None
    config: tuple[int | str, ...] | None = None  # a stack of your own (channels per conv, "M" a pool); None: depth's

    def stack(self) -> tuple[int | str, ...]:
        """The conv stack: `config`, or torchvision's configuration of `depth` (`CONFIGS`)."""
        if self.config is None:
            return CONFIGS[self.depth]
        if not self.config or not all(v == "M" or (is_int(v) and v >= 1) for v in self.config):
            raise ValueError(f"VGG: config must be a non-empty sequence of conv widths (ints >= 1) and 'M' (a max "
                             f"pool), got {self.config!r}.")
        return tuple(self.config)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        imagenet = check_variant("VGG", self.variant, ("imagenet", "cifar")) == "imagenet"
        conv_init = init.he_normal(mode="fan_out", nonlinearity="relu")
        dense = dict(kernel_init=init.normal(std=0.01), bias_init=init.zeros)
        i = 0
        for v in self.stack():
            if v == "M":
                x = jnn.MaxPool(2, stride=2, name=f"features_{i}")(x)
                i += 1
                continue
            x = jnn.Conv(v, 3, padding=1, kernel_init=conv_init, bias_init=init.zeros, name=f"features_{i}")(x)
            i += 1
            if self.batch_norm:
                x = jnn.BatchNorm(axis_name=self.axis_name, name=f"features_{i}")(x, train=train, mask=mask)
                i += 1
            x = jnn.ReLU(name=f"features_{i}")(x)
            i += 1
        if not imagenet:
            x = jnn.Flatten(name="flatten")(x)
            return jnn.Dense(self.num_classes, **dense, name="classifier")(x)
        x = jnn.AdaptiveAvgPool((7, 7), name="avgpool")(x)
        x = jnn.Flatten(name="flatten")(x)
        x = jnn.ReLU(name="classifier_1")(jnn.Dense(4096, **dense, name="classifier_0")(x))
        x = jnn.Dropout(self.dropout, name="classifier_2")(x, train=train)
        x = jnn.ReLU(name="classifier_4")(jnn.Dense(4096, **dense, name="classifier_3")(x))
        x = jnn.Dropout(self.dropout, name="classifier_5")(x, train=train)
        return jnn.Dense(self.num_classes, **dense, name="classifier_6")(x)


def vgg(depth: int, *, batch_norm: bool = False, variant: str = "imagenet", num_classes: int | None = None,
        dropout: float = 0.5, axis_name: str | None = None) -> VGG:
    """VGG-`depth` (11, 13, 16 or 19); see `VGG` for the layers, names, variants and initialisation.

    Args:
      depth: 11, 13, 16 or 19 (torchvision's configurations A, B, D, E).
      batch_norm: a BatchNorm after every conv (torchvision's `vgg*_bn`).
      variant: "imagenet" (224x224, torchvision's head) or "cifar" (32x32, one Dense 512 -> num_classes).
      num_classes: output size (default 1000 for "imagenet", 10 for "cifar").
      dropout: drop rate of the ImageNet classifier's two dropouts (unused by "cifar").
      axis_name: passed to every BatchNorm.
    Registered as "vgg11" ... "vgg19" (option `batch_norm`) and "vgg11_bn" ... "vgg19_bn" (batch_norm=True).
    Raises: TypeError for a `depth` or `num_classes` that is not an int, a non-bool `batch_norm`, a `dropout`
      that is not a real number, a non-string `variant`; ValueError for an unknown depth or variant,
      `num_classes` < 1, `dropout` outside [0, 1).
    """
    if not is_int(depth):
        raise TypeError(f"vgg: depth must be an int, one of {sorted(CONFIGS)}, got {type(depth).__name__} {depth!r}.")
    if depth not in CONFIGS:
        raise ValueError(f"vgg: depth must be one of {sorted(CONFIGS)}, got {depth!r}.")
    name = f"vgg{depth}"
    check_variant(name, variant, ("imagenet", "cifar"))
    check_bool(name, "batch_norm", batch_norm)
    check_rate(name, "dropout", dropout)
    return VGG(depth=depth, batch_norm=batch_norm, variant=variant,
               num_classes=default_classes(name, num_classes, variant), dropout=dropout, axis_name=axis_name)


def _register(depth: int) -> None:
    def plain(*, batch_norm: bool = False, variant: str = "imagenet", num_classes: int | None = None,
              dropout: float = 0.5, axis_name: str | None = None) -> VGG:
        return vgg(depth, batch_norm=batch_norm, variant=variant, num_classes=num_classes, dropout=dropout,
                   axis_name=axis_name)

    def with_bn(*, variant: str = "imagenet", num_classes: int | None = None, dropout: float = 0.5,
                axis_name: str | None = None) -> VGG:
        return vgg(depth, batch_norm=True, variant=variant, num_classes=num_classes, dropout=dropout,
                   axis_name=axis_name)

    for fn, name in ((plain, f"vgg{depth}"), (with_bn, f"vgg{depth}_bn")):
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = f"VGG-{depth}{' with BatchNorm' if fn is with_bn else ''}: `vgg({depth}, ...)`; see `vgg`."
        register(name)(fn)


for _depth in CONFIGS:
    _register(_depth)
