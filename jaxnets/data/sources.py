"""Random-access data sources: a folder of image files, `.npy` memory maps, ArrayRecord and TFDS.

A source is what Grain calls a `RandomAccessDataSource`: `len(source)` examples, and `source[i]` is
the example `{"image": uint8 [H, W, C], "label": int32 scalar}`, read when it is asked for, so a
dataset larger than memory costs only the examples being read. Every source here also has `labels`,
all labels `[N]` int32 in index order (read without decoding an image), which `fit` and `evaluate`
use to check the labels against the model before anything is compiled. Sources are picklable (Grain's
worker processes receive a copy and reopen the files).

    source = data.ImageFolder("imagenet/train", rgb=True)        # torchvision.datasets.ImageFolder
    source[0]                      # {"image": uint8 [H, W, 3], "label": 0}
    loader = data.Loader(source, 256, transforms=data.transforms.imagenet_train(224), seed=0)

PyTorch: `torch.utils.data.Dataset` (map-style); `torchvision.datasets.ImageFolder`.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence

import numpy as np

from jaxnets.checks import check_bool

__all__ = ["IMG_EXTENSIONS", "ImageFolder", "ArraySource", "ArrayRecordSource", "TFDSSource", "decode_image",
           "encode_record", "decode_record"]

_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# torchvision.datasets.folder.IMG_EXTENSIONS: the suffixes ImageFolder accepts (compared lower-case).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def decode_image(fn: str, file, *, rgb: bool, name: str) -> np.ndarray:
    """Decode one image file (a path or a binary file object) with Pillow to uint8 `[H, W, C]`.

    Args:
      fn: the calling function, for the message.
      file: a path or a file-like object holding an encoded image (PNG, JPEG, ...).
      rgb: True: converted to RGB (C = 3), as torchvision's `pil_loader`; False: a grayscale image
        (PIL modes "1", "L", "LA", "I", "I;16", "F") stays one channel (converted to "L": 16-bit and
        float values are clipped to [0, 255], alpha dropped), any other (RGB, RGBA, palette, CMYK, ...)
        is converted to RGB.
      name: what to call the file in the message (its path, or a record number).
    Returns: uint8 `[H, W, C]`, C in {1, 3}.
    Raises:
      ValueError: the file cannot be decoded (truncated, not an image), naming `name`.
    """
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.load()
            # torchvision's pil_loader converts to RGB; without rgb=True gray stays gray (one channel).
            target = "L" if not rgb and image.mode in _GRAY_MODES else "RGB"
            if image.mode != target:
                image = image.convert(target)
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # PIL.UnidentifiedImageError, OSError (truncated), ...: one clear message
        raise ValueError(f"{fn}: cannot decode the image {name}: {type(error).__name__}: {error}") from error
    return array[..., None] if array.ndim == 2 else array


def _find_classes(fn: str, root: str) -> list[str]:
    if not os.path.isdir(root):
        raise ValueError(f"{fn}: root must be an existing directory with one sub-directory per class, got "
                         f"{root!r}, which is not a directory.")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise ValueError(f"{fn}: found no class folder in {root!r}; ImageFolder expects root/<class>/<image>, "
                         f"one sub-directory per class.")
    return classes


class ImageFolder:
    """Images stored one folder per class, decoded on access: torchvision's `ImageFolder` layout and order.

    `root/<class>/**/<file>`: the classes are the sorted names of the sub-directories of `root`,
    `class_to_idx[name]` their positions in that order; each class folder is walked recursively
    (symbolic links followed), directories and file names in sorted order, keeping the files whose
    lower-case name ends with one of `IMG_EXTENSIONS`. `samples[i]` is `(path, class index)`, the same
    list, in the same order, as torchvision builds.

    Args:
      root: the directory (str or path-like).
      rgb: keyword; False (default): grayscale images stay one channel `[H, W, 1]` (and colour images
        are RGB); True: every image is converted to RGB `[H, W, 3]`, as torchvision's default loader.
    Attributes:
      root, rgb; classes (list of names); class_to_idx (dict name -> index); samples (list of
      (path, index)); labels (int32 [N], the class indices in sample order).
    Raises:
      TypeError: `root` not a str or path-like, `rgb` not a bool.
      ValueError: `root` is not a directory, has no class sub-directory, or a class folder holds no
        image file (naming the classes and the accepted extensions). Reading `source[i]` raises a
        ValueError naming the file if it cannot be decoded.
    PyTorch: `torchvision.datasets.ImageFolder(root)` (with `rgb=True`: the same images, as uint8 HWC
      instead of PIL images; `transforms.ToTensor()` and the rest are `jaxnets.data.transforms`).
    """

    def __init__(self, root: str | os.PathLike, *, rgb: bool = False):
        fn = "ImageFolder"
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"{fn}: root must be a str or os.PathLike directory, got {type(root).__name__}.")
        self.root = os.fspath(root)
        self.rgb = check_bool(fn, "rgb", rgb)
        self.classes = _find_classes(fn, self.root)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        empty = []
        for name in self.classes:
            found = 0
            for directory, _, files in sorted(os.walk(os.path.join(self.root, name), followlinks=True)):
                for file in sorted(files):
                    if file.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(directory, file), self.class_to_idx[name]))
                        found += 1
            if not found:
                empty.append(name)
        if empty:
            raise ValueError(f"{fn}: found no image file for the classes {empty} in {self.root!r}; the accepted "
                             f"extensions are {', '.join(IMG_EXTENSIONS)}.")
        self.labels = np.asarray([label for _, label in self.samples], np.int32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        """`{"image": uint8 [H, W, C], "label": int32}` of sample `index` (negative indices count from the end)."""
        path, label = self.samples[index]
        return {"image": decode_image("ImageFolder", path, rgb=self.rgb, name=repr(path)), "label": np.int32(label)}

    def __repr__(self) -> str:
        return f"ImageFolder({self.root!r}, rgb={self.rgb}): {len(self)} images, {len(self.classes)} classes"


def _open_npy(fn: str, name: str, path) -> np.memmap:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: {name} must be the path (str or os.PathLike) of a .npy file, got "
                        f"{type(path).__name__}.")
    try:
        return np.load(os.fspath(path), mmap_mode="r")
    except (OSError, ValueError) as error:
        raise ValueError(f"{fn}: cannot open {name} {os.fspath(path)!r} as a .npy memory map: {error}") from error


class ArraySource:
    """Examples stored in `.npy` files, opened as read-only memory maps: arrays larger than memory.

    `np.load(path, mmap_mode="r")`: nothing is read until an example is asked for, then only its rows
    (the operating system pages them in and may drop them again). Write the files once with
    `np.save` or, for more than memory, `np.lib.format.open_memmap(path, "w+", dtype, shape)`.

    Args:
      images: path of a `.npy` of uint8 (or floating) images `[N, H, W, C]`.
      labels: path of a `.npy` of integer labels `[N]`.
    Attributes: `images`, `labels` (the memory maps), `image_path`, `label_path`.
    Raises:
      TypeError: a path that is not a str or path-like; labels that are not integers.
      ValueError: a file that is not a readable `.npy`, images not `[N, H, W, C]`, labels not `[N]`.
    PyTorch: a `Dataset` over `np.load(..., mmap_mode="r")` arrays.
    """

    def __init__(self, images: str | os.PathLike, labels: str | os.PathLike):
        fn = "ArraySource"
        self.image_path, self.label_path = images, labels
        self._open(fn)
        self.image_path, self.label_path = os.fspath(images), os.fspath(labels)
        if self.images.ndim != 4:
            raise ValueError(f"{fn}: images must be [N, H, W, C] (rank 4, channels last), got shape "
                             f"{self.images.shape} in {self.image_path!r}.")
        if self.labels.dtype.kind not in "iu":
            raise TypeError(f"{fn}: labels must hold integer class indices, got dtype {self.labels.dtype} in "
                            f"{self.label_path!r}.")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{fn}: labels must have shape [N] = ({len(self.images)},), one per image, got "
                             f"{self.labels.shape} in {self.label_path!r}.")

    def _open(self, fn: str) -> None:
        self.images = _open_npy(fn, "images", self.image_path)
        self.labels = _open_npy(fn, "labels", self.label_path)

    def __getstate__(self) -> dict:  # a worker process reopens the files instead of receiving their data
        return {"image_path": self.image_path, "label_path": self.label_path}

    def __setstate__(self, state: dict) -> None:
        self.image_path, self.label_path = state["image_path"], state["label_path"]
        self._open("ArraySource")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        """`{"image": [H, W, C] (a copy, read from the file), "label": int32}` of example `index`."""
        return {"image": np.array(self.images[index]), "label": np.int32(self.labels[index])}

    def __repr__(self) -> str:
        return f"ArraySource({self.image_path!r}, {self.label_path!r}): {len(self)} images of {self.images.shape[1:]}"


# ----------------------------------------------------------------------------------------------
# ArrayRecord: one record per example
# ----------------------------------------------------------------------------------------------
_RECORD_HEADER = struct.Struct("<q")  # the label, a little-endian int64, then the encoded image file


def encode_record(image_file: bytes, label: int) -> bytes:
    """One ArrayRecord record in `ArrayRecordSource`'s default format: the label, then an encoded image.

    Args:
      image_file: the bytes of a PNG, JPEG or other file Pillow decodes.
      label: the integer class index.
    Returns: `int64 label (little-endian) + image_file`.
    """
    if not isinstance(image_file, (bytes, bytearray)):
        raise TypeError(f"encode_record: image_file must be bytes (an encoded PNG/JPEG), got "
                        f"{type(image_file).__name__}.")
    return _RECORD_HEADER.pack(int(label)) + bytes(image_file)


def decode_record(record: bytes, *, rgb: bool = False) -> dict:
    """Parse a record written by `encode_record`: `{"image": uint8 [H, W, C], "label": int32}`."""
    import io

    (label,) = _RECORD_HEADER.unpack_from(record)
    image = decode_image("ArrayRecordSource", io.BytesIO(record[_RECORD_HEADER.size:]), rgb=rgb,
                         name="in an ArrayRecord record")
    return {"image": image, "label": np.int32(label)}


def _read_labels(source, parse) -> np.ndarray:
    labels = np.empty(len(source), np.int32)
    for i in range(len(source)):
        labels[i] = parse(source[i])["label"]
    return labels


class ArrayRecordSource:
    """Examples in ArrayRecord files (Grain's own format), one record per example, parsed on access.

    Args:
      paths: one path or a sequence of paths of `.array_record` files (read in the given order).
      parse: `record bytes -> {"image": uint8 [H, W, C], "label": int}`; default `decode_record`
        (records written by `encode_record`: the label, then a PNG/JPEG file).
      labels: the labels `[N]` in record order, or None: then every record is read and parsed once,
        here, to get them (pass them when the dataset is large).
      rgb: with the default `parse`, convert the images to RGB.
    Raises:
      ImportError: `array_record` is not installed (`pip install array_record`; Grain depends on it).
      ValueError: `labels` of another length than the records.
    PyTorch: no equivalent; TensorFlow's TFRecord is the closest (sequential, not random access).
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                 parse: Callable[[bytes], dict] | None = None, labels=None, rgb: bool = False):
        fn = "ArrayRecordSource"
        try:
            import grain
            import array_record.python.array_record_data_source  # noqa: F401  grain imports it lazily
        except ImportError as error:
            raise ImportError(f"{fn}: needs the array_record package (pip install array_record, or "
                              f"pip install 'jaxnets[arrayrecord]'): {error}") from error
        self.paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        self.rgb = check_bool(fn, "rgb", rgb)
        if parse is not None and not callable(parse):
            raise TypeError(f"{fn}: parse must be a function record bytes -> dict, got {type(parse).__name__}.")
        self.parse = parse
        self._source = grain.sources.ArrayRecordDataSource(self.paths)
        if labels is None:
            labels = _read_labels(self._source, self._parse)
        self.labels = np.asarray(labels)
        if self.labels.shape != (len(self._source),) or self.labels.dtype.kind not in "iu":
            raise ValueError(f"{fn}: labels must be {len(self._source)} integers, one per record, got shape "
                             f"{self.labels.shape} and dtype {self.labels.dtype}.")
        self.labels = self.labels.astype(np.int32)

    def _parse(self, record: bytes) -> dict:
        return decode_record(record, rgb=self.rgb) if self.parse is None else self.parse(record)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        element = self._parse(self._source[index])
        return {"image": np.asarray(element["image"]), "label": np.int32(element["label"])}


class TFDSSource:
    """A TensorFlow Datasets split as a random-access source (`tfds.data_source`).

    The split must be prepared in a random-access file format (`file_format="array_record"`, TFDS's
    default for new datasets); its elements are dicts with "image" uint8 `[H, W, C]` (or `[H, W]`, given
    a channel axis here) and "label". Reading needs `tensorflow-datasets` only, not TensorFlow (the
    `tfds` extra: `pip install jaxnets[tfds]`). Tested on a dataset prepared in the test (array_record).

    Args:
      name: the TFDS dataset name, e.g. "imagenet2012".
      split: e.g. "train" or "validation".
      data_dir: where TFDS keeps its prepared data (None: TFDS's default).
      labels: the labels `[N]` in index order, or None: then every example is read once, here, to get them.
    Raises:
      ImportError: tensorflow_datasets is not installed.
    PyTorch: `torchvision.datasets.*` (which download and read their own formats).
    """

    def __init__(self, name: str, *, split: str, data_dir: str | os.PathLike | None = None, labels=None):
        try:
            import tensorflow_datasets as tfds
        except ImportError as error:
            raise ImportError(f"TFDSSource: needs tensorflow_datasets (pip install tensorflow-datasets), which is "
                              f"not installed: {error}") from error
        self._source = tfds.data_source(name, split=split, data_dir=data_dir)
        self.labels = (_read_labels(self._source, dict) if labels is None
                       else np.asarray(labels, np.int32))

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        element = self._source[index]
        image = np.asarray(element["image"], np.uint8)
        return {"image": image[..., None] if image.ndim == 2 else image, "label": np.int32(element["label"])}
