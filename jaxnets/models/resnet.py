"""ResNet (He et al. 2015), its v1.5 and pre-activation v2 forms, ResNeXt and SE-ResNet.

Course notes 001_* ("Residual Network", "ResNet v1.5", "ResNet v2", "ResNext", "SENet") describe the
blocks; torchvision's `resnet.py` fixes the names, the initialisation and the parameter counts:

    name              blocks         params (ImageNet, 1000 classes, v1 = v1.5)
    resnet18          basic 2-2-2-2      11,689,512
    resnet34          basic 3-4-6-3      21,797,672
    resnet50          bottleneck 3-4-6-3     25,557,032
    resnet101         bottleneck 3-4-23-3    44,549,160
    resnet152         bottleneck 3-8-36-3    60,192,808
    resnext50_32x4d   bottleneck 3-4-6-3, 32 groups x 4 channels   25,028,904
    se_resnet18/34/50   the ResNets above + a squeeze-and-excitation unit in every block

Submodule names are torchvision's with "." -> "_": "conv1", "bn1", "layer1_0" ("conv1", "bn1", "conv2",
"bn2", "conv3", "bn3", "downsample_0", "downsample_1", "se"), ..., "fc", so `from_torch` ports a
torchvision `state_dict` unchanged.
"""
from collections.abc import Sequence

import flax.linen as nn

import jax

from jaxnets import init
from jaxnets import nn as jnn
from jaxnets.checks import check_bool, check_choice, check_positive_int, is_int
from jaxnets.models.registry import check_variant, default_classes, register

VERSIONS = ("v1", "v1.5", "v2")
VARIANTS = ("imagenet", "cifar")
STAGE_PLANES = (64, 128, 256, 512)

# torchvision's ResNet init: every conv kernel is kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = init.he_normal(mode="fan_out", nonlinearity="relu")


def _conv(features: int, kernel: int, *, stride: int = 1, groups: int = 1, zero: bool = False,
          name: str) -> jnn.Conv:
    """A bias-free conv ("same" padding for odd kernels): every ResNet conv feeds a BN, whose shift subsumes a bias."""
    return jnn.Conv(features, kernel, stride=stride, padding=kernel // 2, groups=groups, use_bias=False,
                    kernel_init=init.zeros if zero else _conv_init, name=name)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): rescale each channel by a gate computed from all channels.

    `y = x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`, with "fc1" a 1x1 conv `C -> max(1, C // reduction)` and
    "fc2" a 1x1 conv back to `C`. Both 1x1 convs HAVE a bias (no BN follows them); their kernels are
    initialised like every ResNet conv (He normal, fan_out), their biases like PyTorch's Conv2d bias.
    Names "fc1"/"fc2" are timm's `SEModule` (whose reduced width is additionally rounded to a multiple of 8).

    `__call__(x)`: x `[N, H, W, C]` -> `[N, H, W, C]`.
    PyTorch: `torchvision.ops.SqueezeExcitation(C, C // reduction)` (named fc1/fc2 too).
    """

    reduction: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        s = jnn.GlobalAvgPool(keepdims=True, name="pool")(x)                          # squeeze: [N, 1, 1, C]
        s = jnn.ReLU()(jnn.Conv(max(1, c // self.reduction), 1, kernel_init=_conv_init, name="fc1")(s))
        s = jnn.Sigmoid()(jnn.Conv(c, 1, kernel_init=_conv_init, name="fc2")(s))            # excitation in (0, 1)
        return x * s



class _ResidualBlock(nn.Module):
    """The options every residual block shares; `BasicBlock` and `Bottleneck` add their own."""

    planes: int
    stride: int = 1
    downsample: bool = False
    version: str = "v1.5"
    zero_init_residual: bool = False
    se_reduction: int | None = None
    axis_name: str | None = None

    def batch_norm(self, name: str, last: bool = False) -> jnn.BatchNorm:
        """A BatchNorm of the block; with `zero_init_residual` (v1/v1.5) the last one starts with scale 0."""
        zero = last and self.zero_init_residual and self.version != "v2"
        return jnn.BatchNorm(axis_name=self.axis_name, scale_init=init.zeros if zero else init.ones, name=name)

class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (ResNet-18/34). v1 and v1.5 are the SAME block (the stride is on the first 3x3).

    v1/v1.5 (post-activation): `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
    v2 (pre-activation, He et al. 2016, "Identity mappings"): `p = relu(bn1(x))`,
      `conv2(relu(bn2(conv1(p)))) + shortcut`, no ReLU after the addition.
    shortcut: identity, or when the shape changes (`downsample=True`) a strided 1x1 projection: "downsample_0"
      conv + "downsample_1" BN in v1/v1.5; in v2 the conv alone, applied to the pre-activation `p`.
    An optional squeeze-and-excitation unit ("se") rescales the residual branch just before the addition.
    `zero_init_residual`: v1/v1.5 start "bn2" with scale 0, so the block is `relu(shortcut(x))` at
    initialisation; v2 starts "conv2" at 0 (a zero BN scale before a ReLU would get no gradient), so the
    block is exactly the identity.
    `__call__(x, *, train, mask=None)`: `[N, H, W, C_in]` -> `[N, H / stride, W / stride, planes]`.
    PyTorch: `torchvision.models.resnet.BasicBlock` (v1/v1.5).
    """

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        bn = self.batch_norm

        zero_conv = self.zero_init_residual and self.version == "v2"
        if self.version == "v2":
            p = jnn.ReLU()(bn("bn1")(x, train=train, mask=mask))
            shortcut = _conv(self.planes, 1, stride=self.stride, name="downsample_0")(p) if self.downsample else x
            y = _conv(self.planes, 3, stride=self.stride, name="conv1")(p)
            y = jnn.ReLU()(bn("bn2", last=True)(y, train=train, mask=mask))
            y = _conv(self.planes, 3, zero=zero_conv, name="conv2")(y)
        else:
            y = _conv(self.planes, 3, stride=self.stride, name="conv1")(x)
            y = jnn.ReLU()(bn("bn1")(y, train=train, mask=mask))
            y = bn("bn2", last=True)(_conv(self.planes, 3, name="conv2")(y), train=train, mask=mask)
            shortcut = x
            if self.downsample:
                shortcut = _conv(self.planes, 1, stride=self.stride, name="downsample_0")(x)
                shortcut = bn("downsample_1")(shortcut, train=train, mask=mask)
        if self.se_reduction is not None:
            y = SqueezeExcitation(self.se_reduction, name="se")(y)
        return y + shortcut if self.version == "v2" else jnn.ReLU()(y + shortcut)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand to `4 * planes` (ResNet-50/101/152, ResNeXt).

    Inner width `int(planes * width_per_group / 64) * groups` (torchvision's formula; `planes` for ResNet).
    Where the stride of a downsampling block goes:
      v1: on "conv1", the 1x1 conv (He et al. 2015): it reads only 1 pixel in 4;
      v1.5: on "conv2", the 3x3 conv (torchvision's and NVIDIA's "ResNet v1.5");
      v2: pre-activation, `p = relu(bn1(x))`, `conv3(relu(bn3(conv2(relu(bn2(conv1(p)))))))) + shortcut`, the
        stride on the 3x3 as in He et al.'s pre-activation code (fb.resnet.torch) and timm's ResNetV2.
    shortcut, "se" and `zero_init_residual` ("bn3" scale 0 for v1/v1.5, "conv3" kernel 0 for v2) as in
    `BasicBlock`.
    `__call__(x, *, train, mask=None)`: `[N, H, W, C_in]` -> `[N, H / stride, W / stride, 4 * planes]`.
    PyTorch: `torchvision.models.resnet.Bottleneck` (v1.5).
    """

    groups: int = 1
    width_per_group: int = 64

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        bn = self.batch_norm

        width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
        out = self.planes * self.expansion
        stride_1x1, stride_3x3 = (self.stride, 1) if self.version == "v1" else (1, self.stride)
        if self.version == "v2":
            p = jnn.ReLU()(bn("bn1")(x, train=train, mask=mask))
            shortcut = _conv(out, 1, stride=self.stride, name="downsample_0")(p) if self.downsample else x
            y = jnn.ReLU()(bn("bn2")(_conv(width, 1, stride=stride_1x1, name="conv1")(p), train=train, mask=mask))
            y = _conv(width, 3, stride=stride_3x3, groups=self.groups, name="conv2")(y)
            y = jnn.ReLU()(bn("bn3", last=True)(y, train=train, mask=mask))
            y = _conv(out, 1, zero=self.zero_init_residual, name="conv3")(y)
        else:
            y = jnn.ReLU()(bn("bn1")(_conv(width, 1, stride=stride_1x1, name="conv1")(x), train=train, mask=mask))
            y = _conv(width, 3, stride=stride_3x3, groups=self.groups, name="conv2")(y)
            y = jnn.ReLU()(bn("bn2")(y, train=train, mask=mask))
            y = bn("bn3", last=True)(_conv(out, 1, name="conv3")(y), train=train, mask=mask)
            shortcut = x
            if self.downsample:
                shortcut = _conv(out, 1, stride=self.stride, name="downsample_0")(x)
                shortcut = bn("downsample_1")(shortcut, train=train, mask=mask)
        if self.se_reduction is not None:
            y = SqueezeExcitation(self.se_reduction, name="se")(y)
        return y + shortcut if self.version == "v2" else jnn.ReLU()(y + shortcut)


class ResNet(nn.Module):
    """ResNet / ResNeXt / SE-ResNet: a stem, four stages of residual blocks, global average pool, "fc".

    Stem ("conv1", "bn1", ReLU, "maxpool"):
      variant="imagenet" (`[N, 224, 224, 3]`): 7x7 stride-2 conv (padding 3) -> BN -> ReLU -> 3x3 stride-2 max
        pool (padding 1): 224 -> 56.
      variant="cifar" (`[N, 32, 32, 3]`): 3x3 stride-1 conv (padding 1) -> BN -> ReLU, no pool (the notes'
        "ResNet18 for cifar10": 32x32 through the first stage, then 16, 8, 4).
      v2 (pre-activation): the stem is the conv (and pool) alone, since the first block starts with BN-ReLU;
        a final BN-ReLU ("bn_final") comes after the last stage, before pooling (He et al. 2016).
    Stages "layer1".."layer4" of `stage_sizes` blocks with 64, 128, 256, 512 planes; the first block of stages
      2-4 has stride 2; a projection shortcut wherever the shape changes.
    Head: global average pool -> "fc" Dense(num_classes).

    Initialisation (torchvision's): conv kernels He normal with fan_out (`kaiming_normal_(mode="fan_out",
    nonlinearity="relu")`); BN scale 1, shift 0; "fc" PyTorch's Linear default (U(+-1/sqrt(fan_in)) for
    kernel and bias). Convs feeding a BN have no bias; the only biases are "fc" and the SE 1x1 convs.
    `__call__(x, *, train, mask=None)`: `[N, H, W, 3]` -> logits `[N, num_classes]`.
    PyTorch: `torchvision.models.ResNet` (v1.5, variant="imagenet").
    """

    stage_sizes: Sequence[int]
    bottleneck: bool = False
    num_classes: int = 1000
    variant: str = "imagenet"
    version: str = "v1.5"
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64
    se_reduction: int | None = None
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        imagenet = check_variant("ResNet", self.variant, VARIANTS) == "imagenet"
        if self.version not in VERSIONS:
            raise ValueError(f"ResNet: version must be one of {VERSIONS}, got {self.version!r}.")
        pre_activation = self.version == "v2"
        x = _conv(64, 7 if imagenet else 3, stride=2 if imagenet else 1, name="conv1")(x)
        if not pre_activation:
            x = jnn.ReLU()(jnn.BatchNorm(axis_name=self.axis_name, name="bn1")(x, train=train, mask=mask))
        if imagenet:
            x = jnn.MaxPool(3, stride=2, padding=1, name="maxpool")(x)
        block = Bottleneck if self.bottleneck else BasicBlock
        extra = dict(groups=self.groups, width_per_group=self.width_per_group) if self.bottleneck else {}
        channels = 64
        for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, self.stage_sizes)):
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = stride != 1 or channels != planes * block.expansion
                x = block(planes, stride=stride, downsample=downsample, version=self.version,
                          zero_init_residual=self.zero_init_residual, se_reduction=self.se_reduction,
                          axis_name=self.axis_name, name=f"layer{i + 1}_{j}", **extra)(x, train=train, mask=mask)
                channels = planes * block.expansion
        if pre_activation:
            x = jnn.ReLU()(jnn.BatchNorm(axis_name=self.axis_name, name="bn_final")(x, train=train, mask=mask))
        x = jnn.GlobalAvgPool(name="avgpool")(x)
        return jnn.Dense(self.num_classes, name="fc")(x)


STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet(depth: int, *, num_classes: int | None = None, variant: str = "imagenet", version: str = "v1.5",
           zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
           se_reduction: int | None = None, axis_name: str | None = None, name: str | None = None) -> ResNet:
    """ResNet-`depth` (18, 34: basic blocks; 50, 101, 152: bottlenecks); see `ResNet` for the layers.

    Args:
      depth: 18, 34, 50, 101 or 152.
      num_classes: output size (default 1000 for "imagenet", 10 for "cifar").
      variant: "imagenet" (7x7/2 stem + max pool, 224x224) or "cifar" (3x3/1 stem, no pool, 32x32).
      version: "v1" (stride on the bottleneck's first 1x1), "v1.5" (on the 3x3; torchvision's, the default)
        or "v2" (pre-activation BN-ReLU-conv). v1 and v1.5 are identical for the basic blocks of 18/34.
      zero_init_residual: start every residual branch at zero (last BN scale 0; last conv 0 for v2).
      groups, width_per_group: ResNeXt cardinality and width of each group (bottlenecks only).
      se_reduction: None (plain ResNet) or the squeeze-and-excitation reduction ratio (SE-ResNet).
      axis_name: passed to every BatchNorm (synchronised statistics).
      name: the model's name in error messages (default f"resnet{depth}").
    Raises:
      TypeError: `depth`, `num_classes`, `groups`, `width_per_group` or `se_reduction` not an int (a bool or
        1.5 included), a non-bool `zero_init_residual`, a non-string `variant` or `version`.
      ValueError: an unknown depth, variant or version; `num_classes`, `groups`, `width_per_group` or
        `se_reduction` < 1; a ResNeXt width for basic blocks.
    """
    if not is_int(depth):
        raise TypeError(f"{name or 'resnet'}: depth must be an int, one of {sorted(STAGES)}, "
                        f"got {type(depth).__name__} {depth!r}.")
    name = name or f"resnet{depth}"
    if depth not in STAGES:
        raise ValueError(f"{name}: depth must be one of {sorted(STAGES)}, got {depth!r}.")
    check_variant(name, variant, VARIANTS)
    check_choice(name, "version", version, VERSIONS)
    check_bool(name, "zero_init_residual", zero_init_residual)
    check_positive_int(name, "groups", groups)
    check_positive_int(name, "width_per_group", width_per_group)
    bottleneck = depth >= 50
    if not bottleneck and (groups, width_per_group) != (1, 64):
        raise ValueError(f"{name}: basic blocks support only groups=1, width_per_group=64 (torchvision's rule), "
                         f"got groups={groups}, width_per_group={width_per_group}; use a depth >= 50 for ResNeXt.")
    if se_reduction is not None:
        check_positive_int(name, "se_reduction", se_reduction)
    return ResNet(stage_sizes=STAGES[depth], bottleneck=bottleneck,
                  num_classes=default_classes(name, num_classes, variant), variant=variant, version=version,
                  zero_init_residual=zero_init_residual, groups=groups, width_per_group=width_per_group,
                  se_reduction=se_reduction, axis_name=axis_name)


def _register_resnet(depth: int) -> None:
    def factory(*, num_classes: int | None = None, variant: str = "imagenet", version: str = "v1.5",
                zero_init_residual: bool = False, axis_name: str | None = None) -> ResNet:
        return resnet(depth, num_classes=num_classes, variant=variant, version=version,
                      zero_init_residual=zero_init_residual, axis_name=axis_name)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    factory.__doc__ = (f"ResNet-{depth}: `resnet({depth}, ...)` (options num_classes, variant, version, "
                       f"zero_init_residual, axis_name); see `resnet` and `ResNet`.")
    register(f"resnet{depth}")(factory)


def _register_se_resnet(depth: int) -> None:
    name = f"se_resnet{depth}"

    def factory(*, num_classes: int | None = None, variant: str = "imagenet", version: str = "v1.5",
                zero_init_residual: bool = False, reduction: int = 16, axis_name: str | None = None) -> ResNet:
        check_positive_int(name, "reduction", reduction)
        return resnet(depth, num_classes=num_classes, variant=variant, version=version,
                      zero_init_residual=zero_init_residual, se_reduction=reduction, axis_name=axis_name,
                      name=name)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"SE-ResNet-{depth} (Hu et al. 2018): ResNet-{depth} with a squeeze-and-excitation unit "
                       f"(reduction ratio `reduction`, default 16) on every residual branch after its last BN; "
                       f"other options as `resnet{depth}`. See `SqueezeExcitation`.")
    register(name)(factory)


for _depth in STAGES:
    _register_resnet(_depth)
# SE-ResNet names for the three depths of Hu et al.'s smaller models; other depths through
# `resnet(depth, se_reduction=16)` (each registry name costs a compiled training step in the tests).
for _depth in (18, 34, 50):
    _register_se_resnet(_depth)


@register("resnext50_32x4d")
def resnext50_32x4d(*, num_classes: int | None = None, variant: str = "imagenet", version: str = "v1.5",
                    zero_init_residual: bool = False, axis_name: str | None = None) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al. 2017): ResNet-50 whose 3x3 convs have 32 groups of 4 channels per
    64 planes (inner widths 128, 256, 512, 1024), torchvision's `resnext50_32x4d` (25,028,904 parameters).

    Cardinality through grouped convs: the notes' split-transform-merge block (a) equals the grouped form (c)
    up to its per-path biases, which are absent here (every conv feeds a BN). Options as `resnet50`.
    """
    return resnet(50, num_classes=num_classes, variant=variant, version=version,
                  zero_init_residual=zero_init_residual, groups=32, width_per_group=4, axis_name=axis_name,
                  name="resnext50_32x4d")
