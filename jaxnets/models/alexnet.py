"""AlexNet (Krizhevsky et al., 2012): torchvision's single-tower ImageNet network and a CIFAR-10 variant."""
import flax.linen as nn
import jax

from jaxnets import nn as jnn
from jaxnets.models.registry import check_rate, check_variant, default_classes, register


class AlexNet(nn.Module):
    """AlexNet without the two-GPU split and without local response normalisation.

    Submodule names are torchvision's module paths with "." -> "_" (ReLU/pool indices are skipped in the
    parameter tree because they hold no parameters).

    variant="imagenet" (`[N, 224, 224, 3]`; exactly `torchvision.models.alexnet`, 61,100,840 parameters
    with 1000 classes):

        features_0  Conv(3 -> 64, 11x11, stride 4, padding 2) + ReLU     -> 55x55x64
        features_2  MaxPool(3, stride 2)                                 -> 27x27
        features_3  Conv(64 -> 192, 5x5, padding 2) + ReLU; MaxPool 3/2  -> 13x13x192
        features_6  Conv(192 -> 384, 3x3, padding 1) + ReLU
        features_8  Conv(384 -> 256, 3x3, padding 1) + ReLU
        features_10 Conv(256 -> 256, 3x3, padding 1) + ReLU; MaxPool 3/2 -> 6x6x256
        avgpool     AdaptiveAvgPool(6x6); flatten (C, H, W order)        -> 9216
        classifier  Dropout -> classifier_1 Dense(9216 -> 4096) -> ReLU -> Dropout
                    -> classifier_4 Dense(4096 -> 4096) -> ReLU -> classifier_6 Dense(4096 -> num_classes)

    variant="cifar" (`[N, 32, 32, 3]`; the notes' CIFAR-10 AlexNet: no split, no LRN, overlapping 3/2 max
    pools; 3x3 convs at stride 1 in place of the 11x11/4 and 5x5 stems that would shrink 32x32 to nothing;
    5,671,754 parameters with 10 classes). Same names and indices as above:

        features_0  Conv(3 -> 64, 3x3, padding 1) + ReLU; MaxPool 3/2    -> 15x15x64
        features_3  Conv(64 -> 192, 3x3, padding 1) + ReLU; MaxPool 3/2  -> 7x7x192
        features_6  Conv(192 -> 384, 3x3, padding 1) + ReLU
        features_8  Conv(384 -> 256, 3x3, padding 1) + ReLU
        features_10 Conv(256 -> 256, 3x3, padding 1) + ReLU; MaxPool 3/2 -> 3x3x256; flatten -> 2304
        classifier  Dropout -> classifier_1 Dense(2304 -> 1024) -> ReLU -> Dropout
                    -> classifier_4 Dense(1024 -> 1024) -> ReLU -> classifier_6 Dense(1024 -> num_classes)

    Initialisation: PyTorch's defaults for Conv2d/Linear (torchvision's AlexNet does not re-initialise).
    Dropout draws from the "dropout" RNG stream when `train=True`.
    """

    variant: str = "imagenet"
    num_classes: int = 1000
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        imagenet = check_variant("AlexNet", self.variant, ("imagenet", "cifar")) == "imagenet"
        stem = dict(kernel_size=11, stride=4, padding=2) if imagenet else dict(kernel_size=3, padding=1)
        x = jnn.ReLU(name="features_1")(jnn.Conv(64, **stem, name="features_0")(x))
        x = jnn.MaxPool(3, stride=2, name="features_2")(x)
        second = dict(kernel_size=5, padding=2) if imagenet else dict(kernel_size=3, padding=1)
        x = jnn.ReLU(name="features_4")(jnn.Conv(192, **second, name="features_3")(x))
        x = jnn.MaxPool(3, stride=2, name="features_5")(x)
        x = jnn.ReLU(name="features_7")(jnn.Conv(384, 3, padding=1, name="features_6")(x))
        x = jnn.ReLU(name="features_9")(jnn.Conv(256, 3, padding=1, name="features_8")(x))
        x = jnn.ReLU(name="features_11")(jnn.Conv(256, 3, padding=1, name="features_10")(x))
        x = jnn.MaxPool(3, stride=2, name="features_12")(x)
        if imagenet:
            x = jnn.AdaptiveAvgPool((6, 6), name="avgpool")(x)
        x = jnn.Flatten(name="flatten")(x)
        width = 4096 if imagenet else 1024
        x = jnn.Dropout(self.dropout, name="classifier_0")(x, train=train)
        x = jnn.ReLU(name="classifier_2")(jnn.Dense(width, name="classifier_1")(x))
        x = jnn.Dropout(self.dropout, name="classifier_3")(x, train=train)
        x = jnn.ReLU(name="classifier_5")(jnn.Dense(width, name="classifier_4")(x))
        return jnn.Dense(self.num_classes, name="classifier_6")(x)


@register("alexnet")
def alexnet(*, variant: str = "imagenet", num_classes: int | None = None, dropout: float = 0.5,
            axis_name: str | None = None) -> AlexNet:
    """AlexNet (see `AlexNet` for both variants' exact layers).

    Args:
      variant: "imagenet" (224x224 input, torchvision's network) or "cifar" (32x32 input).
      num_classes: output size (default 1000 for "imagenet", 10 for "cifar").
      dropout: drop rate of the two classifier dropouts (0.5, as torchvision and the paper).
      axis_name: accepted for a uniform interface; AlexNet has no BatchNorm.
    Raises: TypeError for a `num_classes` that is not an int, a `dropout` that is not a real number, a
      non-string `variant`; ValueError for an unknown variant, `num_classes` < 1, `dropout` outside [0, 1).
    """
    check_variant("alexnet", variant, ("imagenet", "cifar"))
    check_rate("alexnet", "dropout", dropout)
    del axis_name
    return AlexNet(variant=variant, num_classes=default_classes("alexnet", num_classes, variant), dropout=dropout)
