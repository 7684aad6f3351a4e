"""Tests for jaxnets/data/datasets.py: the embedded sample, the loaders on files written here in the official
formats, downloads from a local HTTP server, the errors for bad files, and the stratified split."""
import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile

import numpy as np
import pytest

from jaxnets.data import (
    datasets,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
    mnist_sample,
    shuffle,
    split,
)

# ------------------------------------------------------------------------------------------------
# Writers of the official formats


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: big-endian magic 0x00000803 (ubyte, 3 dims) or 0x00000801 (ubyte, 1 dim), the sizes, the bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array, *, gz):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)


class Py2Pickler(pickle._Pickler):
    """Writes protocol 2 as Python 2 did for the original CIFAR batches: every str and bytes as a BINSTRING."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_binstring(self, obj):
        obj = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[str] = save_binstring
    dispatch[bytes] = save_binstring


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # The originals were written by numpy 1.x, whose reconstruct function lives in numpy.core.multiarray.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def chw_rows(images: np.ndarray) -> np.ndarray:
    """NHWC images to CIFAR's rows of 1024 red, 1024 green, 1024 blue bytes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def random_split(rng, n, shape, num_classes):
    return {"image": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
            "label": rng.integers(0, num_classes, n).astype(np.int32)}


def make_mnist(directory, rng, *, gz=True, n_train=12, n_test=5):
    directory.mkdir(parents=True, exist_ok=True)
    train, test = random_split(rng, n_train, (28, 28, 1), 10), random_split(rng, n_test, (28, 28, 1), 10)
    for prefix, part in (("train", train), ("t10k", test)):
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", part["image"][..., 0], gz=gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", part["label"], gz=gz)
    return train, test


CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def make_cifar10(directory, rng, *, version, style="py2", per_batch=3, n_test=2):
    """Write CIFAR-10 in the python (``style`` py2: like the originals, py3: protocol 2 from Python 3) or
    binary version under ``directory``; returns the expected (train, test)."""
    batches = [random_split(rng, per_batch, (32, 32, 3), 10) for _ in CIFAR10_TRAIN]
    test = random_split(rng, n_test, (32, 32, 3), 10)
    if version == "python":
        folder = directory / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, part in zip(CIFAR10_TRAIN + ["test_batch"], batches + [test]):
            entry = {"batch_label": f"{name} of 5", "labels": part["label"].tolist(), "data": chw_rows(part["image"]),
                     "filenames": [f"img_{i}.png" for i in range(len(part["label"]))]}
            if style == "py2":
                (folder / name).write_bytes(py2_pickle(entry))
            else:
                entry["filenames"] = [name.encode() for name in entry["filenames"]]  # bytes: _codecs.encode
                (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    else:
        folder = directory / "cifar-10-batches-bin"
        folder.mkdir(parents=True)
        for name, part in zip(CIFAR10_TRAIN + ["test_batch"], batches + [test]):
            records = np.concatenate([part["label"][:, None].astype(np.uint8), chw_rows(part["image"])], axis=1)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
    train = {key: np.concatenate([b[key] for b in batches]) for key in ("image", "label")}
    return train, test


def make_cifar100(directory, rng, *, version, n_train=4, n_test=3):
    """Returns the expected ((train, test) fine, (train, test) coarse)."""
    parts = {}
    for name, n in (("train", n_train), ("test", n_test)):
        part = random_split(rng, n, (32, 32, 3), 100)
        part["coarse"] = rng.integers(0, 20, n).astype(np.int32)
        parts[name] = part
    if version == "python":
        folder = directory / "cifar-100-python"
        folder.mkdir(parents=True)
        for name, part in parts.items():
            entry = {"filenames": [f"x_{i}.png" for i in range(len(part["label"]))], "batch_label": name,
                     "fine_labels": part["label"].tolist(), "coarse_labels": part["coarse"].tolist(),
                     "data": chw_rows(part["image"])}
            (folder / name).write_bytes(py2_pickle(entry))
    else:
        folder = directory / "cifar-100-binary"
        folder.mkdir(parents=True)
        for name, part in parts.items():
            records = np.concatenate([part["coarse"][:, None], part["label"][:, None], chw_rows(part["image"])],
                                     axis=1).astype(np.uint8)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
    fine = tuple({"image": p["image"], "label": p["label"]} for p in parts.values())
    coarse = tuple({"image": p["image"], "label": p["coarse"]} for p in parts.values())
    return fine, coarse


def tar_directory(source_dir, folder_name, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_dir / folder_name, arcname=folder_name)
    return hashlib.md5(archive.read_bytes()).hexdigest()


def assert_split_equal(got, expected, shape):
    assert set(got) == {"image", "label"}
    assert got["image"].dtype == np.uint8 and got["label"].dtype == np.int32
    assert got["image"].shape == (len(expected["label"]), *shape)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])


def match_path(path, text):
    return f"{re.escape(str(path))}.*{text}"


# ------------------------------------------------------------------------------------------------
# The embedded sample


def test_mnist_sample_shapes_dtypes_balance():
    sample = mnist_sample()
    assert set(sample) == {"image", "label"}
    assert sample["image"].shape == (5000, 28, 28, 1) and sample["image"].dtype == np.uint8
    assert sample["label"].shape == (5000,) and sample["label"].dtype == np.int32
    np.testing.assert_array_equal(np.bincount(sample["label"], minlength=10), [500] * 10)
    assert sample["image"].min() == 0 and sample["image"].max() == 255
    # Real digits, not noise: on average about a fifth of MNIST's pixels are ink (> 127).
    assert 0.1 < (sample["image"] > 127).mean() < 0.3
    assert len(np.unique(sample["image"].reshape(5000, -1), axis=0)) == 5000


def test_mnist_sample_is_cached_and_cannot_be_corrupted():
    first = mnist_sample()
    with pytest.raises(ValueError, match="read-only"):
        first["image"][0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        first["label"][0] = 3
    first["label"] = None  # replacing an entry of the returned dict does not touch the cache
    second = mnist_sample()
    assert second["label"] is not None and second["image"] is first["image"]


# ------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST


@pytest.mark.parametrize("loader,subdir", [(load_mnist, "mnist"), (load_fashion_mnist, "fashion_mnist")])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loaders(tmp_path, rng, loader, subdir, gz):
    expected_train, expected_test = make_mnist(tmp_path / subdir, rng, gz=gz)
    train, test = loader(tmp_path)
    assert_split_equal(train, expected_train, (28, 28, 1))
    assert_split_equal(test, expected_test, (28, 28, 1))


def test_idx_compression_detected_by_content(tmp_path, rng):
    """A gzip file without .gz and a plain file with .gz both read (browsers rename and decompress)."""
    expected_train, _ = make_mnist(tmp_path / "mnist", rng, gz=True)
    d = tmp_path / "mnist"
    os.rename(d / "train-images-idx3-ubyte.gz", d / "train-images-idx3-ubyte")  # gzip content, no suffix
    labels = d / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.decompress(labels.read_bytes()))  # plain content, .gz suffix
    train, _ = load_mnist(tmp_path)
    assert_split_equal(train, expected_train, (28, 28, 1))


def test_idx_missing_files_say_what_to_place_where(tmp_path, rng):
    make_mnist(tmp_path / "mnist", rng)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"load_mnist: MNIST files not found in "
                                                          f"{tmp_path / 'mnist'}: t10k-labels-idx1-ubyte.gz")):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True.*fashion-mnist"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(TypeError, match="load_mnist: download must be a Python bool .*got str 'no'"):
        load_mnist(tmp_path, download="no")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_bad_magic_number(tmp_path, rng, gz):
    make_mnist(tmp_path / "mnist", rng, gz=gz)
    suffix = ".gz" if gz else ""
    images = tmp_path / "mnist" / f"train-images-idx3-ubyte{suffix}"
    labels = tmp_path / "mnist" / f"train-labels-idx1-ubyte{suffix}"
    images.write_bytes(labels.read_bytes())  # swapped files
    with pytest.raises(ValueError, match=match_path(images, "bad magic number 0x00000801: an IDX images file "
                                                            "starts with 0x00000803.*swapped")):
        load_mnist(tmp_path)
    raw = bytearray(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    raw[2] = 0x0D  # type code of float32 data
    images.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(ValueError, match=match_path(images, "bad magic number 0x00000d03.*not an IDX file")):
        load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_wrong_size(tmp_path, rng, gz):
    make_mnist(tmp_path / "mnist", rng, gz=gz, n_train=12)
    suffix = ".gz" if gz else ""
    images = tmp_path / "mnist" / f"train-images-idx3-ubyte{suffix}"
    data = idx_bytes(rng.integers(0, 256, (12, 28, 28)))
    how = r" \(after decompression\)" if gz else ""
    images.write_bytes(gzip.compress(data[:-100]) if gz else data[:-100])
    with pytest.raises(ValueError, match=match_path(images, rf"wrong size: the header says 12 images of 28x28 "
                                                            rf"pixels, 9424 bytes with the header, but the file has "
                                                            rf"9324 bytes{how} \(truncated\)")):
        load_mnist(tmp_path)
    images.write_bytes(gzip.compress(data + b"xyz") if gz else data + b"xyz")
    with pytest.raises(ValueError, match=match_path(images, rf"9424 bytes with the header, but the file has more{how} "
                                                            rf"\(unexpected trailing bytes\)")):
        load_mnist(tmp_path)
    images.write_bytes(gzip.compress(data[:10]) if gz else data[:10])
    with pytest.raises(ValueError, match=match_path(images, "shorter than the 16-byte IDX images header")):
        load_mnist(tmp_path)
    images.write_bytes(gzip.compress(data[:3]) if gz else data[:3])
    with pytest.raises(ValueError, match=match_path(images, "too short for an IDX header")):
        load_mnist(tmp_path)


def zero_tail_gzip(header_and_data: bytes, tail: int, *, member: int = 16 << 20) -> bytes:
    """A gzip file of ``header_and_data`` followed by ``tail`` zero bytes (a multiple of ``member``), built from
    concatenated gzip members (a valid gzip file) so a GiB tail costs one small compression."""
    zeros = gzip.compress(bytes(member), compresslevel=9)
    return gzip.compress(header_and_data) + zeros * (tail // member)


@pytest.mark.parametrize("count", [60000, 100])
def test_idx_zero_tail_is_rejected_fast_and_bounded(tmp_path, rng, count):
    """A valid header followed by 2 GiB of zeros (about 2 MB gzipped): only the bytes the header announces,
    plus one, are decompressed, so the error comes fast and memory stays near the announced size."""
    import time
    import tracemalloc

    make_mnist(tmp_path / "mnist", rng)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    announced = idx_bytes(np.zeros((count, 28, 28), np.uint8))
    images.write_bytes(zero_tail_gzip(announced, 2 << 30))
    assert images.stat().st_size < 4 << 20
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match_path(images, rf"{len(announced)} bytes with the header, but the "
                                                                rf"file has more \(after decompression\) "
                                                                rf"\(unexpected trailing bytes\)")):
            load_mnist(tmp_path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 10.0  # reading the whole tail took 28 s and 4.3 GiB
    # The announced bytes (47 MB for 60,000 images) and their copy, never the 2 GiB tail.
    assert peak < 3 * len(announced) + (8 << 20), peak


@pytest.mark.parametrize("dims,problem", [
    ((20, 5, 5), "the header says 20 images of 5x5 pixels, but a train split holds 1 to 60000 images of 28x28 "
                 "pixels; the file is corrupt or from another dataset"),
    ((0, 28, 28), "the header says 0 images of 28x28 pixels, .*; the file is empty"),
])
def test_idx_undocumented_dimensions_and_empty_files(tmp_path, rng, dims, problem):
    make_mnist(tmp_path / "mnist", rng, gz=False)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte"
    write_idx(images, np.zeros(dims, np.uint8), gz=False)
    with pytest.raises(ValueError, match=match_path(images, problem)):
        load_mnist(tmp_path)


def test_idx_counts_beyond_the_split_are_rejected_before_reading(tmp_path, rng):
    make_mnist(tmp_path / "mnist", rng, gz=False)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">II", 0x0801, 10001))  # the header alone: no data is read
    with pytest.raises(ValueError, match=match_path(labels, "the header says 10001 labels, but a test split holds "
                                                            "1 to 10000 labels")):
        load_mnist(tmp_path)
    write_idx(labels, np.zeros(0, np.uint8), gz=False)
    with pytest.raises(ValueError, match=match_path(labels, "the header says 0 labels.*the file is empty")):
        load_mnist(tmp_path)


def test_idx_truncated_gzip_stream(tmp_path, rng):
    make_mnist(tmp_path / "mnist", rng, gz=True)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    with pytest.raises(ValueError, match=match_path(labels, "gzip stream is truncated or corrupt")):
        load_mnist(tmp_path)


def test_idx_inconsistent_files(tmp_path, rng):
    make_mnist(tmp_path / "mnist", rng, gz=False, n_test=5)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.arange(4), gz=False)
    with pytest.raises(ValueError, match="load_mnist: .*t10k-images-idx3-ubyte holds 5 images but .*holds 4 labels"):
        load_mnist(tmp_path)
    write_idx(labels, np.array([1, 2, 10, 3, 0]), gz=False)
    with pytest.raises(ValueError, match=match_path(labels, r"label values must be in \[0, 10\), found \[10\]")):
        load_mnist(tmp_path)


# ------------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("version,style", [("python", "py2"), ("python", "py3"), ("binary", None)])
def test_load_cifar10(tmp_path, rng, version, style):
    expected_train, expected_test = make_cifar10(tmp_path / "cifar10", rng, version=version, style=style)
    train, test = load_cifar10(tmp_path)
    assert_split_equal(train, expected_train, (32, 32, 3))
    assert_split_equal(test, expected_test, (32, 32, 3))
    train, _ = load_cifar10(tmp_path, version=version)
    assert_split_equal(train, expected_train, (32, 32, 3))


def test_cifar_layout_is_channels_last(tmp_path):
    """Pixel (y, x, c) of the returned image is byte c * 1024 + y * 32 + x of the stored row."""
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    row = np.arange(3072)
    record = np.concatenate([[7], row % 251]).astype(np.uint8)
    for name in CIFAR10_TRAIN + ["test_batch"]:
        (folder / f"{name}.bin").write_bytes(record.tobytes())
    _, test = load_cifar10(tmp_path)
    image = test["image"][0]
    for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (5, 9, 1), (31, 31, 2)]:
        assert image[y, x, c] == (c * 1024 + y * 32 + x) % 251
    assert test["label"].tolist() == [7]


@pytest.mark.parametrize("version", ["python", "binary"])
def test_load_cifar100_fine_and_coarse(tmp_path, rng, version):
    (fine_train, fine_test), (coarse_train, coarse_test) = make_cifar100(tmp_path / "cifar100", rng, version=version)
    train, test = load_cifar100(tmp_path)
    assert_split_equal(train, fine_train, (32, 32, 3))
    assert_split_equal(test, fine_test, (32, 32, 3))
    train, test = load_cifar100(tmp_path, label_mode="coarse", version=version)
    assert_split_equal(train, coarse_train, (32, 32, 3))
    assert_split_equal(test, coarse_test, (32, 32, 3))


def test_cifar_prefers_binary_and_version_selects(tmp_path, rng):
    expected_binary = make_cifar10(tmp_path / "cifar10", rng, version="binary")
    expected_python = make_cifar10(tmp_path / "cifar10", rng, version="python")
    assert_split_equal(load_cifar10(tmp_path)[0], expected_binary[0], (32, 32, 3))
    assert_split_equal(load_cifar10(tmp_path, version="python")[0], expected_python[0], (32, 32, 3))


def test_cifar_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"load_cifar10: unknown version 'pickle'; expected one of \('binary', "
                                         r"'python'\)"):
        load_cifar10(tmp_path, version="pickle")
    with pytest.raises(TypeError, match="load_cifar10: version must be a string, one of .*got int 2"):
        load_cifar10(tmp_path, version=2)
    with pytest.raises(TypeError, match="load_cifar10: download must be a Python bool"):
        load_cifar10(tmp_path, download="yes")
    with pytest.raises(ValueError, match=r"load_cifar100: unknown label_mode 'super'; expected one of \('fine', "
                                         r"'coarse'\)"):
        load_cifar100(tmp_path, label_mode="super")
    with pytest.raises(TypeError, match="load_cifar100: label_mode must be a string"):
        load_cifar100(tmp_path, label_mode=None)
    with pytest.raises(FileNotFoundError, match=re.escape(f"load_cifar10: CIFAR-10 not found: expected "
                                                          f"{tmp_path / 'cifar10' / 'cifar-10-batches-bin'} or")
                       + ".*download=True.*cifar-10-binary.tar.gz \\(md5 c32a1d4ab5d03f1284b67883e8d87530\\)"):
        load_cifar10(tmp_path)


def test_cifar_binary_wrong_size_and_labels(tmp_path, rng):
    make_cifar10(tmp_path / "cifar10", rng, version="binary")
    batch = tmp_path / "cifar10" / "cifar-10-batches-bin" / "data_batch_3.bin"
    good = batch.read_bytes()
    batch.write_bytes(good[:-1])
    with pytest.raises(ValueError, match=match_path(batch, "wrong size: 9218 bytes is not a whole number of 1 to 10000 "
                                                           "3073-byte records.*the file is truncated")):
        load_cifar10(tmp_path)
    batch.write_bytes(b"")
    with pytest.raises(ValueError, match=match_path(batch, "wrong size: 0 bytes.*the file is empty")):
        load_cifar10(tmp_path)
    os.truncate(batch, 10001 * 3073)  # sparse: one record more than documented, rejected before reading
    with pytest.raises(ValueError, match=match_path(batch, "wrong size: 30733073 bytes .*the file is too large")):
        load_cifar10(tmp_path)
    batch.write_bytes(bytes([12]) + good[1:])
    with pytest.raises(ValueError, match=match_path(batch, r"label values must be in \[0, 10\), found \[12\]")):
        load_cifar10(tmp_path)
    batch.unlink()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-bin lacks data_batch_3.bin"):
        load_cifar10(tmp_path)


def test_cifar_python_corrupt_batches(tmp_path, rng):
    make_cifar10(tmp_path / "cifar10", rng, version="python")
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    good = batch.read_bytes()
    batch.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=match_path(batch, "not a valid pickle .*truncated or corrupt")):
        load_cifar10(tmp_path)
    batch.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ValueError, match=match_path(batch, "expected a pickled dict .*got list")):
        load_cifar10(tmp_path)
    batch.write_bytes(py2_pickle({"data": np.zeros((3, 3072), np.uint8)}))
    with pytest.raises(ValueError, match=match_path(batch, "no 'labels' entry")):
        load_cifar10(tmp_path)
    batch.write_bytes(py2_pickle({"data": np.zeros((3, 32, 32, 3), np.uint8), "labels": [0, 1, 2]}))
    with pytest.raises(ValueError, match=match_path(batch, r"'data' must be a uint8 array of shape "
                                                           r"\[N, 3072\].*got uint8 \(3, 32, 32, 3\)")):
        load_cifar10(tmp_path)
    batch.write_bytes(py2_pickle({"data": np.zeros((0, 3072), np.uint8), "labels": []}))
    with pytest.raises(ValueError, match=match_path(batch, r"with 1 <= N <= 10000, got uint8 \(0, 3072\)")):
        load_cifar10(tmp_path)
    batch.write_bytes(b"")
    os.truncate(batch, 10000 * (3072 + 512) + (1 << 20) + 1)  # sparse: larger than 10,000 images need
    with pytest.raises(ValueError, match=match_path(batch, r"wrong size: 36888577 bytes, more than a CIFAR-10 python "
                                                           r"batch of at most 10000 images can take.*not read")):
        load_cifar10(tmp_path)
    batch.write_bytes(py2_pickle({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]}))
    with pytest.raises(ValueError, match=match_path(batch, "'labels' must be 3 integers")):
        load_cifar10(tmp_path)


def test_cifar_malicious_batch_is_refused_without_running(tmp_path, rng):
    make_cifar10(tmp_path / "cifar10", rng, version="python")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(ValueError, match=match_path(batch, "refusing to load the pickle: it refers to the global "
                                                           "io.open")):
        load_cifar10(tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# Archives and downloads


def test_cifar_extracts_a_verified_archive(tmp_path, rng, monkeypatch):
    build = tmp_path / "build"
    expected = make_cifar10(build, rng, version="binary")
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    archive = root / "cifar10" / "cifar-10-binary.tar.gz"
    md5 = tar_directory(build, "cifar-10-batches-bin", archive)
    with pytest.raises(ValueError, match=match_path(archive, f"checksum mismatch: md5 is {md5}, expected "
                                                             f"c32a1d4ab5d03f1284b67883e8d87530")):
        load_cifar10(root)  # not the official archive: refused before extraction
    assert not (root / "cifar10" / "cifar-10-batches-bin").exists()
    monkeypatch.setitem(datasets._SOURCES["cifar10"].md5, "cifar-10-binary.tar.gz", md5)
    train, test = load_cifar10(root)
    assert_split_equal(train, expected[0], (32, 32, 3))
    assert_split_equal(test, expected[1], (32, 32, 3))


def test_cifar_refuses_an_archive_with_an_escaping_path(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    archive = root / "cifar10" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../../escaped")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"oops"))
    monkeypatch.setitem(datasets._SOURCES["cifar10"].md5, "cifar-10-python.tar.gz",
                        hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(ValueError, match=match_path(archive, "refusing to extract: member .*contains '..'")):
        load_cifar10(root)
    assert not (tmp_path / "escaped").exists() and not (root / "escaped").exists()


def test_download_mnist_from_local_server(tmp_path, rng, http_server, monkeypatch):
    served, url = http_server
    expected_train, expected_test = make_mnist(served, rng, gz=True)
    for path in served.iterdir():
        monkeypatch.setitem(datasets._SOURCES["mnist"].md5, path.name, hashlib.md5(path.read_bytes()).hexdigest())
    root = tmp_path / "root"
    train, test = load_mnist(root, download=True, mirror=url)
    assert_split_equal(train, expected_train, (28, 28, 1))
    assert_split_equal(test, expected_test, (28, 28, 1))
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(p.name for p in served.iterdir())
    for path in served.iterdir():
        path.unlink()  # now served by nothing: the files on disk are used, nothing is downloaded
    assert_split_equal(load_mnist(root, download=True, mirror=url)[0], expected_train, (28, 28, 1))


@pytest.mark.parametrize("version", ["binary", "python"])
def test_download_cifar_from_local_server(tmp_path, rng, http_server, monkeypatch, version):
    served, url = http_server
    build = tmp_path / "build"
    expected = make_cifar10(build, rng, version=version)
    folder = {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"}[version]
    name = f"cifar-10-{version}.tar.gz"
    monkeypatch.setitem(datasets._SOURCES["cifar10"].md5, name, tar_directory(build, folder, served / name))
    root = tmp_path / "root"
    train, test = load_cifar10(root, download=True, mirror=url + "/",
                               version=None if version == "binary" else version)  # binary: the default download
    assert_split_equal(train, expected[0], (32, 32, 3))
    assert_split_equal(test, expected[1], (32, 32, 3))
    assert (root / "cifar10" / name).is_file() and (root / "cifar10" / folder).is_dir()


def test_download_with_wrong_checksum_is_rejected(tmp_path, rng, http_server):
    served, url = http_server
    build = tmp_path / "build"
    make_cifar10(build, rng, version="binary")
    md5 = tar_directory(build, "cifar-10-batches-bin", served / "cifar-10-binary.tar.gz")
    root = tmp_path / "root"
    with pytest.raises(ValueError, match=f"cifar-10-binary.tar.gz: checksum mismatch for the download from "
                                         f"{re.escape(url)}/cifar-10-binary.tar.gz: md5 is {md5}, expected "
                                         f"c32a1d4ab5d03f1284b67883e8d87530"):
        load_cifar10(root, download=True, mirror=url)
    assert list((root / "cifar10").iterdir()) == []  # neither the archive nor a .part file is left


def test_download_without_network_says_which_file_to_place_where(tmp_path, closed_port_url):
    root = tmp_path / "root"
    target = root / "mnist" / "train-images-idx3-ubyte.gz"
    with pytest.raises(ConnectionError, match=re.escape(
            f"load_mnist: could not download train-images-idx3-ubyte.gz ({closed_port_url}/train-images-idx3-ubyte.gz"
            f": ") + ".*" + re.escape(f"get train-images-idx3-ubyte.gz (md5 f68b3c2dcbeaaa9fbdd348bbdeb94873) from "
                                      f"{closed_port_url} another way and place it at {target}, then call "
                                      f"load_mnist again.")):
        load_mnist(root, download=True, mirror=closed_port_url)
    target = root / "cifar100" / "cifar-100-python.tar.gz"
    with pytest.raises(ConnectionError, match=re.escape(f"place it at {target}")):
        load_cifar100(root, download=True, mirror=closed_port_url, version="python")


def test_official_sources_table():
    for source in datasets._SOURCES.values():
        assert source.urls and all(url.startswith(("http://", "https://")) for url in source.urls)
        assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in source.md5.values())
    assert datasets._SOURCES["mnist"].urls[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert set(datasets._SOURCES["cifar100"].md5) == {"cifar-100-binary.tar.gz", "cifar-100-python.tar.gz"}


# ------------------------------------------------------------------------------------------------
# split


def test_split_is_stratified_and_complete(rng):
    labels = np.repeat(np.arange(4), [10, 7, 5, 1]).astype(np.int32)
    rng.shuffle(labels)
    arrays = {"image": np.arange(len(labels) * 2).reshape(-1, 2), "label": labels, "id": np.arange(len(labels))}
    train, val = split(arrays, 0.3, seed=0)
    for c, n_c in enumerate([10, 7, 5, 1]):
        expected_val = int(np.floor(0.3 * n_c + 0.5))  # 3, 2, 2 (1.5 rounds up), 0
        assert (val["label"] == c).sum() == expected_val and (train["label"] == c).sum() == n_c - expected_val
    ids = np.concatenate([train["id"], val["id"]])
    assert sorted(ids.tolist()) == list(range(len(labels)))  # every example in exactly one part
    for part in (train, val):
        np.testing.assert_array_equal(part["label"], labels[part["id"]])  # rows stay together
        np.testing.assert_array_equal(part["image"], arrays["image"][part["id"]])
        assert np.all(np.diff(part["id"]) > 0)  # original order kept


def test_split_is_reproducible(rng):
    arrays = {"label": rng.integers(0, 3, 60), "x": rng.normal(size=(60, 2))}
    a, b = split(arrays, 0.25, seed=7), split(arrays, 0.25, seed=7)
    np.testing.assert_array_equal(a[1]["x"], b[1]["x"])
    c = split(arrays, 0.25, seed=8)
    assert not np.array_equal(a[1]["x"], c[1]["x"])
    assert len(split(arrays, 0.0, seed=0)[1]["label"]) == 0 and len(split(arrays, 1.0, seed=0)[0]["label"]) == 0


def test_split_on_the_sample():
    train, val = split(mnist_sample(), 0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(val["label"]), [50] * 10)
    assert train["image"].shape == (4500, 28, 28, 1) and val["image"].dtype == np.uint8


def test_split_errors():
    labels = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="split: arrays must be a dict with a 'label' entry.*got \\['image'\\]"):
        split({"image": np.zeros(3)}, 0.5, seed=0)
    with pytest.raises(TypeError, match="split: arrays must be a dict of arrays .*got tuple"):
        split((labels,), 0.5, seed=0)
    with pytest.raises(ValueError, match="split: all arrays in arrays must have the same length.*'x': 2"):
        split({"label": labels, "x": np.zeros(2)}, 0.5, seed=0)
    with pytest.raises(TypeError, match="split: arrays\\['label'\\] must be a 1-D integer array, got dtype float64"):
        split({"label": labels.astype(float)}, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"split: arrays\['label'\] must be a 1-D integer array, got shape \(3, 1\)"):
        split({"label": labels[:, None]}, 0.5, seed=0)
    with pytest.raises(ValueError, match="split: fraction \\(the validation fraction\\) must be a finite real number "
                                         "in \\[0.0, 1.0\\], got 1.5"):
        split({"label": labels}, 1.5, seed=0)
    with pytest.raises(TypeError, match="split: fraction .* got str '0.5'"):
        split({"label": labels}, "0.5", seed=0)
    with pytest.raises(TypeError, match="split: fraction .* got bool True"):
        split({"label": labels}, True, seed=0)
    with pytest.raises(ValueError, match="split: seed must be an int >= 0, got -1"):
        split({"label": labels}, 0.5, seed=-1)
    with pytest.raises(TypeError, match="split: seed must be an int >= 0, got float 1.0"):
        split({"label": labels}, 0.5, seed=1.0)


# ------------------------------------------------------------------------------------------------
# shuffle


def test_the_sample_and_its_split_are_sorted_by_class_and_say_so():
    """The order is kept (experiments depend on it); the first docstring lines say it."""
    sample = mnist_sample()
    assert np.all(np.diff(sample["label"]) >= 0)
    train, val = split(sample, 0.1, seed=0)
    assert np.all(np.diff(train["label"]) >= 0) and np.all(np.diff(val["label"]) >= 0)
    for fn in (mnist_sample, split):
        assert "SORTED BY CLASS" in fn.__doc__.strip().splitlines()[0]
        assert "shuffle(" in fn.__doc__


def test_shuffle_permutes_every_array_alike(rng):
    arrays = {"image": np.arange(50 * 4).reshape(50, 2, 2, 1), "label": np.arange(50) % 5, "id": np.arange(50)}
    before = {key: value.copy() for key, value in arrays.items()}
    got = shuffle(arrays, seed=3)
    order = np.random.default_rng(3).permutation(50)
    for key in arrays:
        np.testing.assert_array_equal(got[key], before[key][order])  # the documented permutation
        np.testing.assert_array_equal(arrays[key], before[key])      # the input untouched
    np.testing.assert_array_equal(got["image"], arrays["image"][got["id"]])  # rows stay together
    assert not np.array_equal(got["id"], arrays["id"])
    np.testing.assert_array_equal(shuffle(arrays, seed=3)["id"], got["id"])
    assert not np.array_equal(shuffle(arrays, seed=4)["id"], got["id"])
    got["label"][0] = 99  # a copy: the caller may change it
    assert arrays["label"].max() == 4


def test_shuffle_mixes_the_classes_of_the_sample():
    sample = shuffle(mnist_sample(), seed=0)
    assert len(np.unique(sample["label"][:1000])) == 10
    np.testing.assert_array_equal(np.bincount(sample["label"]), [500] * 10)
    assert sample["image"].flags.writeable  # a copy of the read-only sample
    one = np.flatnonzero(sample["label"] == 3)[0]
    assert any(np.array_equal(sample["image"][one], x) for x in mnist_sample()["image"][1500:2000])


def test_shuffle_errors():
    with pytest.raises(TypeError, match="shuffle: arrays must be a dict of arrays .*got list"):
        shuffle([np.arange(3)], seed=0)
    with pytest.raises(ValueError, match="shuffle: arrays must be a non-empty dict"):
        shuffle({}, seed=0)
    with pytest.raises(ValueError, match=r"shuffle: all arrays in arrays must have the same length .*'label': 2"):
        shuffle({"image": np.zeros((3, 1)), "label": np.zeros(2)}, seed=0)
    with pytest.raises(ValueError, match=r"shuffle: every array in arrays must have a leading \(example\) axis"):
        shuffle({"label": np.int32(3)}, seed=0)
    with pytest.raises(TypeError, match="shuffle: seed must be an int >= 0, got NoneType None"):
        shuffle({"label": np.arange(3)}, seed=None)
    with pytest.raises(TypeError, match="shuffle: seed must be an int >= 0, got bool False"):
        shuffle({"label": np.arange(3)}, seed=False)
    with pytest.raises(ValueError, match="shuffle: seed must be an int >= 0, got -2"):
        shuffle({"label": np.arange(3)}, seed=-2)
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        shuffle({"label": np.arange(3)}, 0)  # seed is keyword-only
