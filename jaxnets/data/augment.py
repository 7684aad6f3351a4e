"""On-device data augmentation: pure, keyed, batched JAX functions (test-time augmentation and ensembles:
`jaxnets.train.tta_predict`, `jaxnets.train.ensemble_predict`).

Every random augmentation takes a PRNG key first and a batch of images `[N, H, W, C]` (channels last),
splits the key into `N` per-image keys with `jax.random.split(key, N)`, and returns a batch of the
same shape and dtype. They are meant to run inside the jitted training step (`jax.jit` traces them
once; all shape checks happen at trace time), so augmentation costs device time, not host time::

    augment = compose(deterministic(to_float), partial(random_crop, padding=4), random_flip,
                      deterministic(partial(normalize, mean=CIFAR_MEAN, std=CIFAR_STD)))
    x = augment(jax.random.fold_in(key, step), batch["image"])     # inside train_step

The same key gives the same result; results are a function of the key, not of how many times the
function ran.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checks import as_tuple, concrete_or_none

Transform = Callable[[jax.Array, jax.Array], jax.Array]  # (key, images) -> images


def _check_images(fn: str, images) -> None:
    if getattr(images, "ndim", None) != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"{fn}: expected a batch of images of shape [N, H, W, C] (channels last), got {shape}. "
                         f"Add a batch axis (x[None]) or a channel axis (x[..., None]).")


def _divide(x: jax.Array, divisor) -> jax.Array:
    """`x / divisor` correctly rounded, as PyTorch computes it (`divisor` broadcasts against `x`).

    XLA rewrites a division by a broadcast value into a multiplication by its reciprocal, which can be
    1 ulp off; dividing by the materialised broadcast, kept behind an optimization barrier, stays a true
    division. (Under `vmap` the rewrite can come back: results may then differ by 1 ulp.)
    """
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(jnp.asarray(divisor, x.dtype), x.shape))


@partial(jax.jit, static_argnames=("pad_h", "pad_w", "mode"))
def _pad_and_crop(key: jax.Array, images: jax.Array, fill, *, pad_h: int, pad_w: int, mode: str) -> jax.Array:
    """Pad by `(pad_h, pad_w)` on each side, then take a random window of the original size per image.

    The window's top-left corner is uniform in `[0, 2 pad_h] x [0, 2 pad_w]`, drawn from the image's own
    key `jax.random.split(key, N)[i]`. Jitted as one computation, so eager calls compile once per shape.
    """
    n, height, width, c = images.shape
    pads = ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0))
    if mode == "reflect":
        padded = jnp.pad(images, pads, mode="reflect")
    else:
        padded = jnp.pad(images, pads, constant_values=fill)

    def one(image_key, image):
        top, left = jax.random.randint(image_key, (2,), 0, jnp.array([2 * pad_h + 1, 2 * pad_w + 1]))
        return jax.lax.dynamic_slice(image, (top, left, 0), (height, width, c))

    return jax.vmap(one)(jax.random.split(key, n), padded)


def random_crop(key: jax.Array, images: jax.Array, *, padding: int | tuple[int, int],
                mode: str = "constant") -> jax.Array:
    """Pad each image, then cut a random window of the original size out of it.

    With `padding=p` the window's top-left corner is uniform in `[0, 2p] x [0, 2p]` of the padded
    image, independently for each image: a shift of the image by up to `p` pixels in each direction.

    Args:
      key: PRNG key.
      images: [N, H, W, C], any dtype.
      padding: int, or `(pad_h, pad_w)`, >= 0: pixels added on each side.
      mode: `"constant"` (zeros) or `"reflect"` (mirror without repeating the edge pixel, as
        `numpy.pad(mode="reflect")` and PyTorch's `padding_mode="reflect"`).
    Returns: [N, H, W, C], dtype of `images`.
      PyTorch: `torchvision.transforms.RandomCrop(size=(H, W), padding=p, padding_mode=mode)` per image.
    Raises:
      ValueError: `images` not of rank 4, negative `padding`, unknown `mode`.
    """
    _check_images("random_crop", images)
    pad_h, pad_w = as_tuple("random_crop", "padding", padding, 2, minimum=0)
    if mode not in ("constant", "reflect"):
        raise ValueError(f"random_crop: mode must be 'constant' or 'reflect', got {mode!r}.")
    return _pad_and_crop(key, images, 0, pad_h=pad_h, pad_w=pad_w, mode=mode)


def random_translate(key: jax.Array, images: jax.Array, *, max_shift: int | tuple[int, int],
                     fill: float = 0) -> jax.Array:
    """Shift each image by a random integer `(dy, dx)`, each uniform in `[-max_shift, max_shift]`.

    `out[n, y, x] = images[n, y - dy, x - dx]` where that pixel exists, else `fill`. This is
    `random_crop` with constant padding of `fill` (a window at offset `max_shift - shift` of the
    padded image), so for the same key and `fill=0` the two give the same result.

    Args:
      key: PRNG key.
      images: [N, H, W, C].
      max_shift: int, or `(max_dy, max_dx)`, >= 0.
      fill: value of the uncovered pixels.
    Returns: [N, H, W, C], dtype of `images`.
      PyTorch: `torchvision.transforms.RandomAffine(degrees=0, translate=...)` draws real-valued
      fractions; this draws whole pixels.
    Raises:
      ValueError: `images` not of rank 4, negative `max_shift`.
    """
    _check_images("random_translate", images)
    shift_h, shift_w = as_tuple("random_translate", "max_shift", max_shift, 2, minimum=0)
    return _pad_and_crop(key, images, fill, pad_h=shift_h, pad_w=shift_w, mode="constant")


def hflip(images: jax.Array) -> jax.Array:
    """Mirror every image horizontally (reverse the width axis of [N, H, W, C]).

    PyTorch: `torchvision.transforms.functional.hflip` (which reverses the last axis of NCHW).
    Raises: ValueError if `images` is not of rank 4.
    """
    _check_images("hflip", images)
    return images[:, :, ::-1, :]


def random_flip(key: jax.Array, images: jax.Array, *, p: float = 0.5) -> jax.Array:
    """Mirror each image horizontally with probability `p`, independently per image.

    Args:
      key: PRNG key.
      images: [N, H, W, C].
      p: probability of flipping, in [0, 1].
    Returns: [N, H, W, C], dtype of `images`; each image exactly itself or its mirror image.
      PyTorch: `torchvision.transforms.RandomHorizontalFlip(p)` per image.
    Raises:
      ValueError: `images` not of rank 4, `p` outside [0, 1].
    """
    _check_images("random_flip", images)
    concrete = concrete_or_none(p)
    if concrete is not None and not 0.0 <= float(concrete) <= 1.0:
        raise ValueError(f"random_flip: p must be in [0, 1], got {p}.")
    return _flip(key, images, p)


@jax.jit
def _flip(key: jax.Array, images: jax.Array, p) -> jax.Array:
    flip = jax.vmap(lambda image_key: jax.random.bernoulli(image_key, p))(jax.random.split(key, images.shape[0]))
    return jnp.where(flip[:, None, None, None], hflip(images), images)


def to_float(images: jax.Array) -> jax.Array:
    """uint8 pixels in [0, 255] to float32 in [0, 1] (`x / 255`); floating arrays pass unchanged.

    Works on any rank. PyTorch: `torchvision.transforms.ToTensor` (`x.float().div(255)`), without the
    transpose to CHW.
    Raises: TypeError for integer dtypes other than uint8 (their scale is unknown).
    """
    images = jnp.asarray(images)
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images
    if images.dtype != jnp.uint8:
        raise TypeError(f"to_float: expected uint8 pixels in [0, 255] or a floating array, got {images.dtype}.")
    return _divide(images.astype(jnp.float32), 255.0)  # a true division, bit for bit as torchvision


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """Per-channel standardisation `(images - mean) / std`.

    Args:
      images: [N, H, W, C] floating (use `to_float` first: `mean` and `std` are usually given
        on the [0, 1] scale, e.g. CIFAR-10's `(0.4914, 0.4822, 0.4465)`).
      mean: scalar or [C].
      std: scalar or [C], positive.
    Returns: [N, H, W, C], dtype of `images`.
      PyTorch: `torchvision.transforms.Normalize(mean, std)` (the same subtraction then division).
    Raises:
      TypeError: integer `images`.
      ValueError: `images` not of rank 4, `mean`/`std` not scalar or of length C, `std <= 0`.
    """
    _check_images("normalize", images)
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"normalize: images must be floating, got {images.dtype}; call to_float first (mean "
                        f"and std are then on the [0, 1] scale).")
    channels = images.shape[-1]
    for name, value in (("mean", mean), ("std", std)):
        shape = np.shape(value)
        if shape not in ((), (1,), (channels,)):
            raise ValueError(f"normalize: {name} must be a scalar or have one value per channel "
                             f"({channels}), got shape {shape}.")
    concrete = concrete_or_none(std)
    if concrete is not None and not np.all(concrete > 0):
        raise ValueError(f"normalize: std must be positive, got {concrete.tolist()}.")
    return _divide(images - jnp.asarray(mean, images.dtype), std)


def deterministic(fn: Callable[[jax.Array], jax.Array]) -> Transform:
    """Wrap `images -> images` (e.g. `to_float` or `partial(normalize, mean=m, std=s)`) as
    `(key, images) -> images` for `compose`; the key is ignored."""
    if not callable(fn):
        raise TypeError(f"deterministic: expected a function images -> images, got {type(fn).__name__}.")

    def keyless(key: jax.Array, images: jax.Array) -> jax.Array:
        del key
        return fn(images)

    keyless.__name__ = f"deterministic({getattr(fn, '__name__', type(fn).__name__)})"
    return keyless


def compose(*fns: Transform) -> Transform:
    """Chain augmentations `(key, images) -> images` into one, applied left to right.

    The key is split into one key per function, `jax.random.split(key, len(fns))`, and function `i`
    gets key `i`, so the functions draw independent randomness. Wrap functions without a key with
    `deterministic`, and bind options with `functools.partial(random_crop, padding=4)`.

    Returns: a function `(key, images) -> images`.
    Raises:
      ValueError: no functions. TypeError: a non-callable argument.
    """
    if not fns:
        raise ValueError("compose: expected at least one function (key, images) -> images, got none.")
    for i, fn in enumerate(fns):
        if not callable(fn):
            raise TypeError(f"compose: argument {i} must be a function (key, images) -> images, got "
                            f"{type(fn).__name__}.")

    def composed(key: jax.Array, images: jax.Array) -> jax.Array:
        for fn, fn_key in zip(fns, jax.random.split(key, len(fns))):
            images = fn(fn_key, images)
        return images

    return composed


# ------------------------------------------------------------------------------------------------
# Moved: test-time augmentation and ensembles live in jaxnets.train (evaluation.py) now.
# ------------------------------------------------------------------------------------------------
MOVED_TO_TRAIN = ("tta_predict", "ensemble_predict")


def moved_to_train(module: str, name: str):
    """The module-level `__getattr__` of `module` for the names moved to `jaxnets.train`: returns
    `jaxnets.train.<name>` with a DeprecationWarning (the old name works for one release); imported
    lazily, so that data does not import train at import time. AttributeError for any other name."""
    if name not in MOVED_TO_TRAIN:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(f"{module}.{name} is deprecated and will be removed in the next release; use "
                  f"jaxnets.train.{name}.", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module("jaxnets.train"), name)


def __getattr__(name: str):
    return moved_to_train(__name__, name)
