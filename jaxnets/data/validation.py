"""Host-side checks of datasets, run once before any compilation so a bad dataset fails with a clear message.

A dataset split is `{"image": uint8 or float [N, H, W, C], "label": integer [N]}` (channels last). The
checks read shapes and dtypes, and the labels' minimum and maximum; they never copy the images, so they
cost the same for 5,000 images and for 5 million. Every failure names the calling function and the
argument and says what was expected and what arrived (TypeError for a wrong type, ValueError for a wrong
value; see `jaxnets.checks`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxnets.checks import check_bool, check_positive_int, is_int


def check_arrays(fn: str, name: str, arrays) -> dict[str, np.ndarray]:
    """Check a dict of arrays with one leading (example) axis of the same length; return them as numpy.

    Args:
      fn: the calling function, for the messages.
      name: the argument's name, for the messages.
      arrays: a non-empty dict of arrays (numpy, jax, or anything `numpy.asarray` takes); jax arrays
        are copied to the host.
    Returns: a new dict with the same keys, numpy arrays.
    Raises:
      TypeError: `arrays` is not a dict.
      ValueError: the dict is empty, an entry is a scalar, or the leading dimensions differ.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{fn}: {name} must be a dict of arrays such as {{'image': ..., 'label': ...}}, "
                        f"got {type(arrays).__name__}.")
    if not arrays:
        raise ValueError(f"{fn}: {name} must be a non-empty dict of arrays such as {{'image': ..., 'label': ...}}, "
                         f"got an empty dict.")
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    scalars = [key for key, value in arrays.items() if value.ndim == 0]
    if scalars:
        raise ValueError(f"{fn}: every array in {name} must have a leading (example) axis; {scalars} are scalars.")
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{fn}: all arrays in {name} must have the same length (leading dimension), got {lengths}.")
    return arrays


def _image_shape(fn: str, image_shape) -> tuple[int, int, int]:
    """`image_shape` as a tuple of 3 positive ints `(H, W, C)`."""
    if not isinstance(image_shape, Sequence) or isinstance(image_shape, str):
        raise TypeError(f"{fn}: image_shape must be a tuple (H, W, C) of 3 ints or None, got "
                        f"{type(image_shape).__name__} {image_shape!r}.")
    if len(image_shape) != 3 or not all(is_int(d) and d >= 1 for d in image_shape):
        raise ValueError(f"{fn}: image_shape must be a tuple (H, W, C) of 3 positive ints, got {image_shape!r}.")
    return tuple(int(d) for d in image_shape)


def _is_floating(dtype) -> bool:
    import jax.numpy as jnp  # jnp.issubdtype also knows bfloat16 (numpy's does not)

    return bool(jnp.issubdtype(dtype, jnp.floating))


def check_image_label_keys(fn: str, name: str, data, *, alternative: str | None = None,
                           optional: str | None = None) -> None:
    """TypeError unless `data` is a dict, ValueError unless it has "image" and "label" entries.

    `alternative` names another accepted type and `optional` an optional key, both for the message
    (e.g. `alternative="a jaxnets.data.Batches"`, `optional="'mask' [N]"`).
    """
    expected = "a dict with 'image' [N, H, W, C] and 'label' [N]"
    expected += f" (and optionally {optional})" if optional else ""
    if not isinstance(data, Mapping):
        raise TypeError(f"{fn}: {name} must be {expected}" + (f" or {alternative}" if alternative else "")
                        + f", got {type(data).__name__}.")
    missing = [key for key in ("image", "label") if key not in data]
    if missing:
        raise ValueError(f"{fn}: {name} must be {expected}, got the keys {sorted(map(str, data))} (missing "
                         f"{missing}).")


def check_dataset(fn: str, name: str, data, *, image_shape: Sequence[int] | None = None,
                  num_classes: int | None = None, allow_empty: bool = False) -> int:
    """Check a dataset split on the host before training or evaluating on it; return its size N.

    Checks, in this order: `data` is a dict with `"image"` and `"label"` (or a `Batches`,
    whose arrays are checked); the images are `[N, H, W, C]` (rank 4, channels last) of dtype uint8 or
    floating; the labels are integer class indices of shape `[N]`; N >= 1 (unless `allow_empty`);
    with `num_classes`, every label is in `[0, num_classes)`; with `image_shape`, every image is
    `image_shape`. Only shapes, dtypes and the labels' minimum and maximum are read: the images are
    never copied or scanned.

    Example (what `fit` runs for a LeNet-5 on MNIST)::

        n = check_dataset("fit", "train_data", train, image_shape=(28, 28, 1), num_classes=10)

    Args:
      fn: the calling function, named in every message (e.g. `"fit"`).
      name: the argument holding the data (e.g. `"train_data"`, `"val_data"`).
      data: `{"image": [N, H, W, C], "label": [N], ...}` (numpy or jax arrays; other keys are ignored)
        or a `jaxnets.data.Batches`.
      image_shape: the `(H, W, C)` the model takes, or None to accept any.
      num_classes: the number of classes the model predicts (an int >= 1), or None to skip the range check.
      allow_empty: accept N = 0.
    Returns: N, the number of examples.
    Raises:
      TypeError: `data` is neither a dict nor a Batches; images of another dtype than uint8 or floating;
        labels that are not integers (strings, floats, bools); a bad `image_shape`/`num_classes` type.
      ValueError: a missing `"image"`/`"label"` entry; images not of rank 4 (a `[N, H, W]` array gets
        the fix `x[..., None]`); labels not of shape `[N]` (one-hot labels get the fix
        `labels.argmax(-1)`); no examples; labels outside `[0, num_classes)` (the message gives their
        minimum and maximum); images of another shape than `image_shape` (NCHW images
        `[N, C, H, W]` get the fix `x.transpose(0, 2, 3, 1)`).
    PyTorch: no equivalent; torch reports these inside the model or the loss (e.g. CUDA's "device-side
      assert triggered" for an out-of-range label).
    """
    from jaxnets.data.batches import Batches  # batches imports this module

    if isinstance(data, Batches):
        data = data.arrays
    check_image_label_keys(fn, name, data, alternative="a jaxnets.data.Batches")
    allow_empty = check_bool(fn, "allow_empty", allow_empty)
    if num_classes is not None:
        num_classes = check_positive_int(fn, "num_classes", num_classes)
    if image_shape is not None:
        image_shape = _image_shape(fn, image_shape)
    images, labels = data["image"], data["label"]
    # Only the shape and dtype of the images are read: a numpy or jax array is used as it is (no copy).
    images = images if hasattr(images, "shape") and hasattr(images, "dtype") else np.asarray(images)
    labels = labels if hasattr(labels, "shape") and hasattr(labels, "dtype") else np.asarray(labels)
    shape = tuple(images.shape)
    if len(shape) == 3:
        raise ValueError(f"{fn}: {name}['image'] must be [N, H, W, C] (channels last), got shape {shape} without "
                         f"a channel axis; add it with x[..., None] (grayscale images have C = 1).")
    if len(shape) not in (2, 4):
        raise ValueError(f"{fn}: {name}['image'] must be [N, H, W, C] (rank 4, channels last) or flat features "
                         f"[N, D], got shape {shape}.")
    if images.dtype != np.uint8 and not _is_floating(images.dtype):
        raise TypeError(f"{fn}: {name}['image'] must have dtype uint8 or a floating dtype, got {images.dtype}.")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name}['label'] must hold integer class indices, got dtype {labels.dtype}; map "
                        f"the classes to 0 .. num_classes - 1 and pass an integer array.")
    n = shape[0]
    if tuple(labels.shape) != (n,):
        hint = (" (one-hot? pass class indices: labels.argmax(-1))" if labels.ndim == 2 and labels.shape[0] == n
                else "")
        raise ValueError(f"{fn}: {name}['label'] must have shape [N] = ({n},), one integer per image, got "
                         f"{tuple(labels.shape)}{hint}.")
    if n == 0 and not allow_empty:
        raise ValueError(f"{fn}: {name} must hold at least one example, got N = 0 (images of shape {shape}).")
    if num_classes is not None and n:
        low, high = int(np.min(labels)), int(np.max(labels))
        if low < 0 or high >= num_classes:
            raise ValueError(f"{fn}: {name}['label'] must be in [0, {num_classes}) for a model with {num_classes} "
                             f"classes, got labels from {low} to {high}; use a model with more classes or remap "
                             f"the labels to 0 .. {num_classes - 1}.")
    if image_shape is not None and shape[1:] != image_shape:
        h, w, c = image_shape
        hint = ("; that looks like NCHW; this model is channels-last NHWC: transpose with x.transpose(0, 2, 3, 1)"
                if shape[1:] == (c, h, w) else "")
        raise ValueError(f"{fn}: {name}['image'] must be [N, {h}, {w}, {c}] for this model, got shape "
                         f"{shape}{hint}.")
    return n
