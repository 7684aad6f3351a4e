"""Network in Network (Lin, Chen & Yan, 2013) for CIFAR-10."""
import flax.linen as nn
import jax

from jaxnets import nn as jnn
from jaxnets.models.registry import check_rate, check_variant, default_classes, register

# (features, kernel size, padding) of the three mlpconv blocks: a spatial conv then two 1x1 convs.
_BLOCKS = (((192, 5, 2), (160, 1, 0), (96, 1, 0)),
           ((192, 5, 2), (192, 1, 0), (192, 1, 0)),
           ((192, 3, 1), (192, 1, 0), None))   # None: the last 1x1 conv has num_classes outputs


class NiN(nn.Module):
    """NiN for `[N, 32, 32, 3]` images: three mlpconv blocks, no linear layers, a global average pool.

    Names are the indices of the equivalent PyTorch `nn.Sequential` ("features_{i}"):

        features_0  Conv(3 -> 192, 5x5, pad 2) + ReLU, features_2 Conv 1x1 -> 160 + ReLU,
        features_4  Conv 1x1 -> 96 + ReLU, features_6 MaxPool(3, 2, ceil_mode=True) (32 -> 16),
        features_7  Dropout(0.5)
        features_8  Conv(96 -> 192, 5x5, pad 2) + ReLU, features_10 Conv 1x1 -> 192 + ReLU,
        features_12 Conv 1x1 -> 192 + ReLU, features_14 MaxPool(3, 2, ceil_mode=True) (16 -> 8),
        features_15 Dropout(0.5)
        features_16 Conv(192 -> 192, 3x3, pad 1) + ReLU, features_18 Conv 1x1 -> 192 + ReLU,
        features_20 Conv 1x1 -> num_classes + ReLU
        features_22 global average pool (8x8 -> 1x1) -> logits [N, num_classes]

    `ceil_mode=True` rounds (32 - 3) / 2 + 1 = 15.5 up to 16 (PyTorch rounds down by default), as the notes
    prescribe. Dropout after the pools follows the paper (the notes remark that modern practice differs).
    The ReLU after the last 1x1 conv is the paper's (the logits are then >= 0 before averaging). 966,986
    parameters with 10 classes. Initialisation: PyTorch's Conv2d defaults (the notes' PyTorch model).
    """

    num_classes: int = 10
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        i = 0
        for b, block in enumerate(_BLOCKS):
            for spec in block:
                features, k, pad = spec if spec is not None else (self.num_classes, 1, 0)
                x = jnn.Conv(features, k, padding=pad, name=f"features_{i}")(x)
                x = jnn.ReLU(name=f"features_{i + 1}")(x)
                i += 2
            if b < len(_BLOCKS) - 1:
                x = jnn.MaxPool(3, stride=2, ceil_mode=True, name=f"features_{i}")(x)
                x = jnn.Dropout(self.dropout, name=f"features_{i + 1}")(x, train=train)
                i += 2
        return jnn.GlobalAvgPool(name=f"features_{i}")(x)


@register("nin")
def nin(*, variant: str = "cifar", num_classes: int | None = None, dropout: float = 0.5,
        axis_name: str | None = None) -> NiN:
    """Network in Network for CIFAR-10 (see `NiN` for the layers).

    Args:
      variant: "cifar" only (32x32 input; the final global pool also accepts other sizes).
      num_classes: output size, the channels of the last 1x1 conv (default 10).
      dropout: drop rate after the first two pools (0.5).
      axis_name: accepted for a uniform interface; NiN has no BatchNorm.
    Raises: TypeError for a `num_classes` that is not an int, a `dropout` that is not a real number, a
      non-string `variant`; ValueError for an unknown variant, `num_classes` < 1, `dropout` outside [0, 1).
    """
    check_variant("nin", variant, ("cifar",))
    check_rate("nin", "dropout", dropout)
    del axis_name
    return NiN(num_classes=default_classes("nin", num_classes, variant), dropout=dropout)
