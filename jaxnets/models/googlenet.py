"""GoogLeNet / Inception v1 (Szegedy et al. 2014), as torchvision builds it (with BatchNorm), and a CIFAR-10 variant.

Course notes 001_* ("GoogLeNet (Inception v1)"): inception modules of four parallel branches (1x1; 1x1 ->
3x3; 1x1 -> "5x5"; 3x3 max pool -> 1x1) concatenated along channels, 1x1 convs reducing the channels before
the expensive convs, 3/2 max pools with `ceil_mode=True`, two optional auxiliary classifiers.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets import init
from jaxnets import nn as jnn
from jaxnets.checks import check_bool
from jaxnets.models.registry import check_rate, check_variant, default_classes, register

VARIANTS = ("imagenet", "cifar")

# torchvision initialises every Conv2d/Linear weight with trunc_normal_(std=0.01, a=-2, b=2); the cut is at
# +-2 absolute, i.e. 200 standard deviations, so this is a plain normal(0, 0.01). Linear biases keep
# PyTorch's default U(+-1/sqrt(fan_in)).
_weight_init = init.normal(std=0.01)

# (in_channels is implicit) ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, torchvision's table.
INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class BasicConv2d(nn.Module):
    """"conv" (no bias) -> "bn" (eps 0.001) -> ReLU. PyTorch: `torchvision.models.googlenet.BasicConv2d`."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        x = jnn.Conv(self.features, self.kernel_size, stride=self.stride, padding=self.padding, use_bias=False,
                     kernel_init=_weight_init, name="conv")(x)
        # eps 0.001, as torchvision's GoogLeNet (ported from TensorFlow), not PyTorch's default 1e-5.
        return jnn.ReLU()(jnn.BatchNorm(eps=1e-3, axis_name=self.axis_name, name="bn")(x, train=train, mask=mask))


class Inception(nn.Module):
    """Four branches concatenated along channels: `[N, H, W, C]` -> `[N, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj]`.

    "branch1": 1x1; "branch2_0", "branch2_1": 1x1 -> 3x3; "branch3_0", "branch3_1": 1x1 -> 3x3 (the paper's
    5x5, which torchvision implements as a 3x3, a known bug kept for weight and parameter parity:
    pytorch/vision#906); "branch4_0" 3x3 stride-1 max pool (padding 1), "branch4_1" 1x1.
    PyTorch: `torchvision.models.googlenet.Inception`.
    """

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        def conv(features, k, name, x):
            return BasicConv2d(features, k, padding=k // 2, axis_name=self.axis_name, name=name)(
                x, train=train, mask=mask)

        b1 = conv(self.ch1x1, 1, "branch1", x)
        b2 = conv(self.ch3x3, 3, "branch2_1", conv(self.ch3x3red, 1, "branch2_0", x))
        b3 = conv(self.ch5x5, 3, "branch3_1", conv(self.ch5x5red, 1, "branch3_0", x))
        b4 = jnn.MaxPool(3, stride=1, padding=1, ceil_mode=True, name="branch4_0")(x)
        b4 = conv(self.pool_proj, 1, "branch4_1", b4)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: adaptive average pool to 4x4 -> "conv" BasicConv2d 1x1 (128) -> flatten (2048, in
    PyTorch's C, H, W order) -> "fc1" Dense(1024) -> ReLU -> dropout 0.7 -> "fc2" Dense(num_classes).
    PyTorch: `torchvision.models.googlenet.InceptionAux`.
    """

    num_classes: int
    dropout: float = 0.7
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        x = jnn.AdaptiveAvgPool((4, 4), name="pool")(x)
        x = BasicConv2d(128, 1, axis_name=self.axis_name, name="conv")(x, train=train, mask=mask)
        x = jnn.Flatten(name="flatten")(x)
        x = jnn.ReLU()(jnn.Dense(1024, kernel_init=_weight_init, name="fc1")(x))
        x = jnn.Dropout(self.dropout, name="dropout")(x, train=train)
        return jnn.Dense(self.num_classes, kernel_init=_weight_init, name="fc2")(x)


class GoogLeNet(nn.Module):
    """Inception v1 with BatchNorm, torchvision's `GoogLeNet(transform_input=False)`.

    variant="imagenet" (`[N, 224, 224, 3]`), torchvision's layers and names:
        conv1 7x7/2 (pad 3) -> maxpool1 3/2 ceil -> conv2 1x1 (64) -> conv3 3x3 (192) -> maxpool2 3/2 ceil (28x28)
        -> inception3a, 3b -> maxpool3 3/2 ceil (14x14) -> inception4a..4e -> maxpool4 2/2 ceil (7x7)
        -> inception5a, 5b (1024 channels) -> global average pool -> dropout 0.2 -> "fc".
      6,624,904 parameters for 1000 classes without the auxiliary heads (13,004,888 with them).
      `ceil_mode=True` matters at 112 -> 56 and 56 -> 28: (112 - 3) / 2 + 1 = 55.5 rounds UP to 56.
    variant="cifar" (`[N, 32, 32, 3]`): the same modules, but conv1 is a 3x3 stride-1 conv (padding 1) and
      maxpool1, maxpool2 are dropped, so the inception stages run at 32x32, 16x16 and 8x8 (the layout of the
      widely used pytorch-cifar GoogLeNet, which starts with a 3x3 conv to 192 channels and pools twice).
      5,602,474 parameters for 10 classes (the inception stages are the same; conv1 has a 3x3 kernel).

    Auxiliary classifiers ("aux1" after inception4a, "aux2" after inception4d; `InceptionAux`): with
    `aux_logits=True` and `train=True`, `__call__` returns `(logits, aux1, aux2)`, each `[N, num_classes]`
    (torchvision returns `GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`; the paper weights the
    auxiliary losses by 0.3); with `train=False` it returns the logits only, and the heads are skipped. Their
    parameters are always created by `init`, whatever `train` is.

    Initialisation (torchvision's): conv and Dense kernels normal(0, 0.01), Dense biases PyTorch's default;
    BN scale 1, shift 0. Convs feed a BN and have no bias.
    `__call__(x, *, train, mask=None)`: `[N, H, W, 3]` -> logits `[N, num_classes]` (or the triple above).
    Dropout needs the "dropout" RNG stream when `train=True`.
    """

    num_classes: int = 1000
    variant: str = "imagenet"
    aux_logits: bool = False
    dropout: float = 0.2
    dropout_aux: float = 0.7
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        imagenet = check_variant("GoogLeNet", self.variant, VARIANTS) == "imagenet"
        ax = self.axis_name

        def inception(name, x):
            return Inception(*INCEPTION[name], axis_name=ax, name=name)(x, train=train, mask=mask)

        def aux(name, x):
            head = InceptionAux(self.num_classes, dropout=self.dropout_aux, axis_name=ax, name=name)
            return head(x, train=train, mask=mask)

        # The heads run in training, and in init so that their parameters exist for a later train=True apply.
        run_aux = self.aux_logits and (train or self.is_initializing())
        if imagenet:
            x = BasicConv2d(64, 7, stride=2, padding=3, axis_name=ax, name="conv1")(x, train=train, mask=mask)
            x = jnn.MaxPool(3, stride=2, ceil_mode=True, name="maxpool1")(x)
        else:
            x = BasicConv2d(64, 3, padding=1, axis_name=ax, name="conv1")(x, train=train, mask=mask)
        x = BasicConv2d(64, 1, axis_name=ax, name="conv2")(x, train=train, mask=mask)
        x = BasicConv2d(192, 3, padding=1, axis_name=ax, name="conv3")(x, train=train, mask=mask)
        if imagenet:
            x = jnn.MaxPool(3, stride=2, ceil_mode=True, name="maxpool2")(x)
        x = inception("inception3b", inception("inception3a", x))
        x = jnn.MaxPool(3, stride=2, ceil_mode=True, name="maxpool3")(x)
        x = inception("inception4a", x)
        aux1 = aux("aux1", x) if run_aux else None
        x = inception("inception4d", inception("inception4c", inception("inception4b", x)))
        aux2 = aux("aux2", x) if run_aux else None
        x = inception("inception4e", x)
        x = jnn.MaxPool(2, stride=2, ceil_mode=True, name="maxpool4")(x)
        x = inception("inception5b", inception("inception5a", x))
        x = jnn.GlobalAvgPool(name="avgpool")(x)
        x = jnn.Dropout(self.dropout, name="dropout")(x, train=train)
        logits = jnn.Dense(self.num_classes, kernel_init=_weight_init, name="fc")(x)
        if self.aux_logits and train:
            return logits, aux1, aux2
        return logits


@register("googlenet")
def googlenet(*, num_classes: int | None = None, variant: str = "imagenet", aux_logits: bool = False,
              dropout: float = 0.2, dropout_aux: float = 0.7, axis_name: str | None = None) -> GoogLeNet:
    """GoogLeNet (Inception v1); see `GoogLeNet` for the layers, names, variants and outputs.

    Args:
      num_classes: output size (default 1000 for "imagenet", 10 for "cifar").
      variant: "imagenet" (224x224, torchvision's network) or "cifar" (32x32: 3x3 stem, no stem pools).
      aux_logits: build the two auxiliary classifiers; in training `__call__` then returns
        `(logits, aux1, aux2)`.
      dropout: drop rate before "fc" (torchvision's 0.2); dropout_aux: in the auxiliary heads (0.7).
      axis_name: passed to every BatchNorm.
    Raises: TypeError for a non-bool `aux_logits`, a `num_classes` that is not an int, a dropout rate that is
      not a real number, a non-string `variant`; ValueError for an unknown variant, `num_classes` < 1, a
      dropout rate outside [0, 1).
    """
    check_variant("googlenet", variant, VARIANTS)
    check_bool("googlenet", "aux_logits", aux_logits)
    check_rate("googlenet", "dropout", dropout)
    check_rate("googlenet", "dropout_aux", dropout_aux)
    return GoogLeNet(num_classes=default_classes("googlenet", num_classes, variant), variant=variant,
                     aux_logits=aux_logits, dropout=dropout, dropout_aux=dropout_aux, axis_name=axis_name)
