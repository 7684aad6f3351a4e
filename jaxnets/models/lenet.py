"""LeNet-5, modern form (ReLU and max pooling), for 28x28 MNIST digits padded by 2."""
import flax.linen as nn
import jax

from jaxnets import nn as jnn
from jaxnets.models.registry import check_variant, default_classes, register


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling (LeCun et al. 1998).

    Layout, as the PyTorch `nn.Sequential` it mirrors (submodule names = torch paths with "." -> "_"):

        features_0   Conv(1 -> 6, 5x5, padding 2)    28x28x1 -> 28x28x6   (the "padded by 2" of 32x32 LeNet)
        features_1   ReLU
        features_2   MaxPool(2, 2)                   -> 14x14x6
        features_3   Conv(6 -> 16, 5x5)              -> 10x10x16
        features_4   ReLU
        features_5   MaxPool(2, 2)                   -> 5x5x16
        (flatten in PyTorch's C, H, W order: 400)
        classifier_0 Dense(400 -> 120), classifier_1 ReLU,
        classifier_2 Dense(120 -> 84),  classifier_3 ReLU,
        classifier_4 Dense(84 -> num_classes)

    61,706 parameters for 10 classes. Initialisation: PyTorch's defaults for Conv2d/Linear.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        del train  # no BN or dropout: the same function in both modes
        x = jnn.Conv(6, 5, padding=2, name="features_0")(x)
        x = jnn.ReLU(name="features_1")(x)
        x = jnn.MaxPool(2, name="features_2")(x)
        x = jnn.Conv(16, 5, name="features_3")(x)
        x = jnn.ReLU(name="features_4")(x)
        x = jnn.MaxPool(2, name="features_5")(x)
        x = jnn.Flatten()(x)
        x = jnn.Dense(120, name="classifier_0")(x)
        x = jnn.ReLU(name="classifier_1")(x)
        x = jnn.Dense(84, name="classifier_2")(x)
        x = jnn.ReLU(name="classifier_3")(x)
        return jnn.Dense(self.num_classes, name="classifier_4")(x)


@register("lenet5")
def lenet5(*, num_classes: int | None = None, variant: str = "mnist", axis_name: str | None = None) -> LeNet5:
    """Modern LeNet-5 for `[N, 28, 28, 1]` images (see `LeNet5` for the layers and names).

    Args:
      num_classes: output size (default 10).
      variant: "mnist" only.
      axis_name: accepted for a uniform interface; LeNet-5 has no BatchNorm.
    Raises: TypeError for a `num_classes` that is not an int or a non-string `variant`; ValueError for an
      unknown variant or `num_classes` < 1.
    """
    check_variant("lenet5", variant, ("mnist",))
    del axis_name
    return LeNet5(num_classes=default_classes("lenet5", num_classes, variant))
