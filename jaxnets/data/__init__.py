"""Data: an embedded MNIST sample, safe dataset loaders, a deterministic batch pipeline, on-device augmentation,
and, for data beyond memory, random-access sources read by a Grain pipeline (`Loader`) with host transforms.

Every part of the library takes a dataset split as one dict `{"image": uint8 [N, H, W, C],
"label": int32 [N]}` (channels last). Small datasets live in host memory; `Batches` feeds them to
the devices (sharded, prefetched, in an order fixed by `(seed, epoch)`), and the functions of
`jaxnets.data.augment` run on the device inside the compiled step.
"""
from jaxnets.data import augment
from jaxnets.data.augment import (
    compose,
    deterministic,
    hflip,
    normalize,
    random_crop,
    random_flip,
    random_translate,
    to_float,
)
from jaxnets.data.batches import Batches, EpochIterator, steps_per_epoch
from jaxnets.data.datasets import (
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
    mnist_sample,
    shuffle,
    split,
)
from jaxnets.data.validation import check_arrays, check_dataset
from jaxnets.data import transforms
from jaxnets.data.pipeline import Loader, example_rng, is_source
from jaxnets.data.sources import ArrayRecordSource, ArraySource, ImageFolder, TFDSSource

__all__ = [
    "augment", "Batches", "EpochIterator", "mnist_sample", "load_mnist", "load_fashion_mnist", "load_cifar10",
    "load_cifar100", "split", "random_crop", "random_flip", "random_translate", "hflip", "normalize", "to_float",
    "compose", "deterministic", "shuffle", "steps_per_epoch", "check_dataset",
    "check_arrays", "transforms", "Loader", "is_source", "example_rng", "ImageFolder", "ArraySource", "ArrayRecordSource",
    "TFDSSource",
]

def __getattr__(name: str):
    """`jaxnets.data.tta_predict` / `ensemble_predict`: moved to `jaxnets.train`; deprecated here for one release."""
    return augment.moved_to_train(__name__, name)
