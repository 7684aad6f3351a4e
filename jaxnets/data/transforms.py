"""Host-side image transforms for ImageNet-style training, as Grain transforms run in worker processes.

Each transform takes an example `{"image": uint8 [H, W, C], "label": ..., ...}` and returns a new
dict with the image replaced (the other keys pass through). Random ones are `grain.transforms.
RandomMap`s, `random_map(element, rng)` with a `numpy.random.Generator`; deterministic ones are
`grain.transforms.Map`s (registered as virtual subclasses of Grain's abstract classes when this module
is imported, except in a `Loader`'s worker processes, which do not import grain: see `jaxnets.data.processes`). They work per example, on images of any size (before batching), which the
on-device functions of `jaxnets.data.augment` (fixed shapes, whole batches) cannot do. Use them in a
`jaxnets.data.Loader(source, batch_size, transforms=[...])` (which draws each example's generator from
`(seed, epoch, example index)`) or in a Grain pipeline of your own (`dataset.random_map(t, seed=...)`).

    train_tf = transforms.imagenet_train(224)     # RandomResizedCrop(224), RandomHorizontalFlip()
    eval_tf = transforms.imagenet_eval(224)       # Resize(256), CenterCrop(224)

Resampling is Pillow's bilinear filter (with its antialiasing when shrinking): the pixels torchvision's
transforms give on PIL images. The random numbers come from numpy, not torch: the same rules,
different draws. Normalising on the device (`fit(..., preprocess=...)`) moves a quarter of the bytes
of normalising here (uint8 instead of float32); `Normalize` is here for pipelines that want it.

PyTorch: `torchvision.transforms` (v1) on PIL images.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from jaxnets.checks import as_tuple, check_real
from jaxnets.data import processes

__all__ = ["RandomResizedCrop", "RandomHorizontalFlip", "Resize", "CenterCrop", "Normalize",
           "random_resized_crop_box", "resize_shorter_side", "imagenet_train", "imagenet_eval",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet models' normalisation, on the [0, 1] scale
IMAGENET_STD = (0.229, 0.224, 0.225)


def _image(fn: str, element) -> np.ndarray:
    if not isinstance(element, Mapping) or "image" not in element:
        raise TypeError(f"{fn}: expected an example dict with an 'image' [H, W, C], got {type(element).__name__}.")
    image = np.asarray(element["image"])
    if image.ndim != 3:
        raise ValueError(f"{fn}: the image must be [H, W, C] (one example, channels last), got shape {image.shape}.")
    return image


def _replace(element, image: np.ndarray) -> dict:
    return {**element, "image": image}


def _size(fn: str, size) -> tuple[int, int]:
    """An int `s` -> `(s, s)`; a pair `(h, w)` -> itself (positive ints)."""
    return as_tuple(fn, "size", size, 2)


def _pair(fn: str, name: str, value, *, minimum: float) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{fn}: {name} must be a pair (low, high) of numbers, got {value!r}.")
    low, high = (check_real(fn, name, v, minimum=minimum) for v in value)
    if low > high:
        raise ValueError(f"{fn}: {name} must be (low, high) with low <= high, got {value!r}.")
    return float(low), float(high)


def _pil_resize(image: np.ndarray, height: int, width: int, box=None) -> np.ndarray:
    """Pillow's bilinear resize of uint8 `[H, W, C]` (C = 1 or 3) to `[height, width, C]`, optionally of a
    crop `box = (left, top, right, bottom)` only: torchvision's `F.resize` / `F.resized_crop` on PIL images."""
    from PIL import Image

    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR, box=box))
    return out[..., None] if out.ndim == 2 else out


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int, *,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """The crop `(top, left, h, w)` of torchvision's `RandomResizedCrop.get_params`, drawn with numpy.

    Up to 10 tries: an area `uniform(scale) * height * width` and an aspect ratio
    `exp(uniform(log(ratio)))`, `w = round(sqrt(area * ratio))`, `h = round(sqrt(area / ratio))`; the
    first that fits in the image is placed uniformly (`top` in `[0, height - h]`, `left` in
    `[0, width - w]`). If none fits: a centred crop of the whole image, narrowed to the nearest
    allowed aspect ratio.

    Args:
      rng: the numpy generator.
      height, width: the image size.
      scale: (low, high) fraction of the image area; ratio: (low, high) width / height.
    Returns: `(top, left, h, w)` ints.
    PyTorch: `torchvision.transforms.RandomResizedCrop.get_params(img, scale, ratio)` (torch's generator).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height  # fallback: torchvision's central crop
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_shorter_side(height: int, width: int, size: int) -> tuple[int, int]:
    """The `(new_height, new_width)` torchvision's `Resize(size)` (an int) gives: the shorter side becomes
    `size`, the longer `int(size * long / short)` (truncated), so the aspect ratio is kept."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


class RandomResizedCrop:
    """Crop a random area and aspect ratio of the image, resized to `size`: ImageNet's training crop.

    The box is `random_resized_crop_box(rng, H, W, scale=scale, ratio=ratio)`, resampled bilinearly.

    Args:
      size: output `(height, width)`, or an int for a square.
      scale: (low, high) fraction of the image's area the crop covers, before resizing.
      ratio: (low, high) aspect ratio width / height of the crop.
    Returns (from `random_map(element, rng)`): the example with image uint8 `[size_h, size_w, C]`.
    Raises: TypeError/ValueError at construction for a bad size, scale (outside (0, 1]) or ratio.
    PyTorch: `torchvision.transforms.RandomResizedCrop(size, scale, ratio)` (bilinear, PIL images).
    """

    def __init__(self, size, *, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        fn = "RandomResizedCrop"
        self.size = _size(fn, size)
        self.scale = _pair(fn, "scale", scale, minimum=0.0)
        self.ratio = _pair(fn, "ratio", ratio, minimum=0.0)
        if self.scale[0] <= 0 or self.scale[1] > 1 or self.ratio[0] <= 0:
            raise ValueError(f"{fn}: scale must lie in (0, 1] and ratio be positive, got scale={scale!r}, "
                             f"ratio={ratio!r}.")

    def random_map(self, element, rng: np.random.Generator) -> dict:
        image = _image("RandomResizedCrop", element)
        top, left, h, w = random_resized_crop_box(rng, image.shape[0], image.shape[1], scale=self.scale,
                                                  ratio=self.ratio)
        return _replace(element, _pil_resize(image, *self.size, box=(left, top, left + w, top + h)))


class RandomHorizontalFlip:
    """Mirror the image left-right with probability `p` (`[H, W, C]` -> `image[:, ::-1]`).

    Args: p: the flip probability, in [0, 1].
    PyTorch: `torchvision.transforms.RandomHorizontalFlip(p)`.
    """

    def __init__(self, p: float = 0.5):
        self.p = float(check_real("RandomHorizontalFlip", "p", p, minimum=0.0, maximum=1.0))

    def random_map(self, element, rng: np.random.Generator) -> dict:
        image = _image("RandomHorizontalFlip", element)
        if rng.random() < self.p:
            image = np.ascontiguousarray(image[:, ::-1])
        return _replace(element, image)


class Resize:
    """Resize the image bilinearly: an int `size` makes the SHORTER side `size` (`resize_shorter_side`),
    a pair `(h, w)` gives exactly that size.

    PyTorch: `torchvision.transforms.Resize(size)` on PIL images (bilinear, antialiased).
    """

    def __init__(self, size):
        fn = "Resize"
        self.shorter = size if isinstance(size, int) and not isinstance(size, bool) else None
        self.size = _size(fn, size)

    def map(self, element) -> dict:
        image = _image("Resize", element)
        h, w = (resize_shorter_side(image.shape[0], image.shape[1], self.shorter) if self.shorter is not None
                else self.size)
        return _replace(element, _pil_resize(image, h, w))


class CenterCrop:
    """Crop the centre `size` of the image (an image smaller than `size` is first padded with zeros).

    The crop starts at `top = round((H - h) / 2)`, `left = round((W - w) / 2)` (Python's round, as
    torchvision).
    PyTorch: `torchvision.transforms.CenterCrop(size)`.
    """

    def __init__(self, size):
        self.size = _size("CenterCrop", size)

    def map(self, element) -> dict:
        image = _image("CenterCrop", element)
        h, w = self.size
        pad_h, pad_w = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
        if pad_h or pad_w:  # torchvision pads (left/top = pad // 2, right/bottom = the rest) with zeros
            image = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        top = int(round((image.shape[0] - h) / 2.0))
        left = int(round((image.shape[1] - w) / 2.0))
        return _replace(element, np.ascontiguousarray(image[top:top + h, left:left + w]))


class Normalize:
    """uint8 pixels to float32 `(x / 255 - mean) / std`, per channel.

    Args:
      mean, std: one value per channel (or one for all), on the [0, 1] scale; std positive.
    Returns (from `map`): the example with image float32 `[H, W, C]`.
    PyTorch: `transforms.ToTensor()` then `transforms.Normalize(mean, std)` (without the transpose to CHW).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        if self.mean.size == 0 or self.std.size == 0 or np.any(self.std <= 0):
            raise ValueError(f"Normalize: mean must be non-empty and std positive, got mean={mean!r}, std={std!r}.")

    def map(self, element) -> dict:
        image = _image("Normalize", element)
        if image.dtype != np.uint8:
            raise TypeError(f"Normalize: expected uint8 pixels in [0, 255], got {image.dtype}.")
        x = image.astype(np.float32) / np.float32(255.0)  # a true division, as ToTensor
        return _replace(element, (x - self.mean) / self.std)


def imagenet_train(size: int = 224, *, normalize: bool = False) -> list:
    """The standard ImageNet training transforms: `[RandomResizedCrop(size), RandomHorizontalFlip()]`,
    then `Normalize()` with `normalize=True`.

    PyTorch: `transforms.Compose([RandomResizedCrop(size), RandomHorizontalFlip(), ToTensor(), Normalize(...)])`.
    """
    out = [RandomResizedCrop(size), RandomHorizontalFlip()]
    return out + [Normalize()] if normalize else out


def imagenet_eval(size: int = 224, *, resize: int = 256, normalize: bool = False) -> list:
    """The standard ImageNet evaluation transforms: `[Resize(resize), CenterCrop(size)]`, then `Normalize()`
    with `normalize=True`.

    PyTorch: `transforms.Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(...)])`.
    """
    out = [Resize(resize), CenterCrop(size)]
    return out + [Normalize()] if normalize else out


def _register_with_grain() -> None:
    """Make the transforms `grain.transforms.RandomMap`/`Map`s (virtual subclasses of Grain's abstract
    classes: `isinstance` and Grain's dispatch see them as such) without subclassing them here."""
    import grain

    for cls in (RandomResizedCrop, RandomHorizontalFlip):
        grain.transforms.RandomMap.register(cls)
    for cls in (Resize, CenterCrop, Normalize):
        grain.transforms.Map.register(cls)


if not processes.in_worker_process():  # a Loader worker reads without grain (and the jax it imports)
    _register_with_grain()
