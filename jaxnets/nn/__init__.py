"""Flax linen modules: each owns its parameters/state and calls exactly one function of `jaxnets.layers`.

Conventions: channels-last (`NHWC`) by default, `layout="NCHW"` for PyTorch-shaped arrays; `train` is a
required keyword of every module whose behaviour depends on it (`BatchNorm`, `Dropout`, `Sequential`);
`Conv`/`Dense` are initialised exactly like PyTorch's layers unless given `kernel_init`/`bias_init`.
"""
from jaxnets.nn.activations import ELU, Activation, LeakyReLU, LogSoftmax, Maxout, ReLU, Sigmoid, Tanh
from jaxnets.nn.dropout import Dropout
from jaxnets.nn.linear import Conv, Dense
from jaxnets.nn.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm
from jaxnets.nn.pooling import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool
from jaxnets.nn.reshape import Flatten
from jaxnets.nn.sequential import Sequential, accepts_train

__all__ = [
    "Activation", "AdaptiveAvgPool", "AvgPool", "BatchNorm", "Conv", "Dense", "Dropout", "ELU", "Flatten",
    "GlobalAvgPool", "GroupNorm", "InstanceNorm", "LayerNorm", "LeakyReLU", "LogSoftmax", "MaxPool", "Maxout", "ReLU",
    "Sequential", "Sigmoid", "Tanh", "accepts_train",
]
