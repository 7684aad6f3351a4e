"""Data: an embedded MNIST sample, safe dataset loaders, a deterministic batch pipeline, on-device augmentation,
and, for data beyond memory, random-access sources read by a Grain pipeline (`Loader`) with host transforms.

Every part of the library takes a dataset split as one dict `{"image": uint8 [N, H, W, C],
"label": int32 [N]}` (channels last). Small datasets live in host memory; `Batches` feeds them to
the devices (sharded, prefetched, in an order fixed by `(seed, epoch)`), and the functions of
`jaxnets.data.augment` run on the device inside the compiled step.
"""
import importlib
import importlib.util

# Each public name and the module that defines it, imported when the name is first used (PEP 562), so that
# importing one module of the package (as a Loader's worker processes do: `reading`, `sources`, `transforms`)
# does not import jax and grain through the others.
_HOMES = {
    "augment": None, "transforms": None,
    **dict.fromkeys(("compose", "deterministic", "hflip", "normalize", "random_crop", "random_flip",
                     "random_translate", "to_float"), "augment"),
    **dict.fromkeys(("Batches", "EpochIterator", "steps_per_epoch"), "batches"),
    **dict.fromkeys(("load_cifar10", "load_cifar100", "load_fashion_mnist", "load_mnist", "mnist_sample", "shuffle",
                     "split"), "datasets"),
    **dict.fromkeys(("check_arrays", "check_dataset"), "validation"),
    **dict.fromkeys(("Loader", "is_source"), "pipeline"),
    "example_rng": "reading",
    **dict.fromkeys(("ArrayRecordSource", "ArraySource", "ImageFolder", "TFDSSource"), "sources"),
}

__all__ = [
    "augment", "Batches", "EpochIterator", "mnist_sample", "load_mnist", "load_fashion_mnist", "load_cifar10",
    "load_cifar100", "split", "random_crop", "random_flip", "random_translate", "hflip", "normalize", "to_float",
    "compose", "deterministic", "shuffle", "steps_per_epoch", "check_dataset",
    "check_arrays", "transforms", "Loader", "is_source", "example_rng", "ImageFolder", "ArraySource", "ArrayRecordSource",
    "TFDSSource",
]


def __getattr__(name: str):
    """The public names, imported on first use; `jaxnets.data.tta_predict` / `ensemble_predict`: moved to
    `jaxnets.train`, deprecated here for one release."""
    if name not in _HOMES:
        if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
            raise AttributeError(name)  # a dunder, or a submodule `from jaxnets.data import x` is importing
        return importlib.import_module("jaxnets.data.augment").moved_to_train(__name__, name)
    home = _HOMES[name]
    value = importlib.import_module(f"{__name__}.{name if home is None else home}")
    if home is not None:
        value = getattr(value, name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
