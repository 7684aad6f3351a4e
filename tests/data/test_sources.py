"""Sources: ImageFolder's torchvision layout and order, Pillow decoding and its errors, ArraySource's memory
maps, the ArrayRecord adapter (array_record comes with grain), and the TFDS adapter on a dataset prepared here
(tensorflow-datasets is a test dependency; TensorFlow is not needed to prepare or read it)."""
import io
import os
import pickle
import sys

import numpy as np
import pytest
from PIL import Image

from jaxnets import data
from jaxnets.data.sources import decode_record, encode_record


def _png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(path)


@pytest.fixture
def folder(tmp_path, rng):
    """root/{cat,ant,bee}/...: classes out of order, a nested folder, upper-case and skipped extensions."""
    root = tmp_path / "train"
    images = {}
    for name in ("cat/b.png", "cat/a.PNG", "cat/sub/c.png", "ant/z.png", "bee/x.png", "bee/y.jpg"):
        array = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        path = str(root / name)
        if name.endswith(".jpg"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(array).save(path, quality=95)
        else:
            _png(path, array)
        images[name] = array
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "ant" / "image.png.bak").write_bytes(b"skipped: the extension is .bak")
    (root / "README").write_text("a file at the top level is not a class")
    return root, images


def test_image_folder_follows_torchvision_layout_and_order(folder):
    root, images = folder
    source = data.ImageFolder(root, rgb=True)
    assert source.classes == ["ant", "bee", "cat"]
    assert source.class_to_idx == {"ant": 0, "bee": 1, "cat": 2}
    # Classes in sorted order; within a class, os.walk's directories sorted, then file names sorted.
    expected = ["ant/z.png", "bee/x.png", "bee/y.jpg", "cat/a.PNG", "cat/b.png", "cat/sub/c.png"]
    assert [os.path.relpath(p, root) for p, _ in source.samples] == expected
    assert [label for _, label in source.samples] == [0, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(source.labels, [0, 1, 1, 2, 2, 2])
    assert source.labels.dtype == np.int32 and len(source) == 6
    example = source[4]
    assert example["image"].dtype == np.uint8 and example["image"].shape == (6, 5, 3)
    np.testing.assert_array_equal(example["image"], images["cat/b.png"])  # PNG: lossless
    assert example["label"] == 2
    # JPEG is lossy: the pixels are Pillow's decode, what torchvision's pil_loader gives.
    with Image.open(root / "bee" / "y.jpg") as pil:
        np.testing.assert_array_equal(source[2]["image"], np.asarray(pil.convert("RGB")))


def test_grayscale_stays_one_channel_or_becomes_rgb(tmp_path, rng):
    gray = rng.integers(0, 256, (4, 7), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    os.makedirs(tmp_path / "root" / "only")
    Image.fromarray(gray).save(tmp_path / "root" / "only" / "g.png")
    one = data.ImageFolder(tmp_path / "root")[0]["image"]
    assert one.shape == (4, 7, 1)
    np.testing.assert_array_equal(one[..., 0], gray)
    three = data.ImageFolder(tmp_path / "root", rgb=True)[0]["image"]
    assert three.shape == (4, 7, 3)
    np.testing.assert_array_equal(three, np.repeat(gray[..., None], 3, axis=-1))  # PIL's L -> RGB copies


def test_colour_image_with_alpha_becomes_rgb(tmp_path, rng):
    rgba = rng.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    _png(str(tmp_path / "r" / "c" / "a.png"), rgba)
    image = data.ImageFolder(tmp_path / "r")[0]["image"]
    np.testing.assert_array_equal(image, rgba[..., :3])  # as PIL's convert("RGB"): alpha dropped


def test_a_file_that_fails_to_decode_is_named(folder):
    root, _ = folder
    (root / "bee" / "x.png").write_bytes(b"\x89PNG truncated")
    source = data.ImageFolder(root)  # construction does not decode
    with pytest.raises(ValueError, match=r"ImageFolder: cannot decode the image '.*bee/x\.png'"):
        source[1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(TypeError, match="ImageFolder: root must be a str or os.PathLike"):
        data.ImageFolder(3)
    with pytest.raises(ValueError, match="ImageFolder: root must be an existing directory .* 'missing'"):
        data.ImageFolder("missing")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(ValueError, match=r"ImageFolder: found no class folder in '.*empty_root'"):
        data.ImageFolder(tmp_path / "empty_root")
    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r" / "a" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"ImageFolder: found no image file for the classes \['a'\] in '.*r'"):
        data.ImageFolder(tmp_path / "r")
    _png(str(tmp_path / "r" / "a" / "i.png"), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(TypeError, match="ImageFolder: rgb must be a Python bool"):
        data.ImageFolder(tmp_path / "r", rgb=1)


@pytest.fixture
def arrays(tmp_path, rng):
    images = rng.integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 300).astype(np.int64)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    return tmp_path / "x.npy", tmp_path / "y.npy", images, labels


def test_array_source_reads_memory_maps(arrays):
    x_path, y_path, images, labels = arrays
    source = data.ArraySource(x_path, y_path)
    assert isinstance(source.images, np.memmap) and isinstance(source.labels, np.memmap)  # not loaded whole
    assert len(source) == 300
    example = source[17]
    assert not isinstance(example["image"], np.memmap)  # a copy of one example, not a view of the file
    np.testing.assert_array_equal(example["image"], images[17])
    assert example["label"] == labels[17] and example["label"].dtype == np.int32
    # Pickled for a worker process: the paths, not the 230 kB of data; the copy reopens the memory maps.
    blob = pickle.dumps(source)
    assert len(blob) < 1000
    copy = pickle.loads(blob)
    assert isinstance(copy.images, np.memmap)
    np.testing.assert_array_equal(copy[299]["image"], images[299])


def test_array_source_errors(tmp_path, arrays):
    x_path, y_path, images, labels = arrays
    with pytest.raises(TypeError, match="ArraySource: images must be the path .* got int"):
        data.ArraySource(3, y_path)
    with pytest.raises(ValueError, match="ArraySource: cannot open images .*missing.npy"):
        data.ArraySource(tmp_path / "missing.npy", y_path)
    np.save(tmp_path / "flat.npy", images.reshape(300, -1))
    with pytest.raises(ValueError, match=r"ArraySource: images must be \[N, H, W, C\] .* \(300, 768\)"):
        data.ArraySource(tmp_path / "flat.npy", y_path)
    np.save(tmp_path / "float_labels.npy", labels.astype(np.float32))
    with pytest.raises(TypeError, match="ArraySource: labels must hold integer class indices, got dtype float32"):
        data.ArraySource(x_path, tmp_path / "float_labels.npy")
    np.save(tmp_path / "short.npy", labels[:5])
    with pytest.raises(ValueError, match=r"ArraySource: labels must have shape \[N\] = \(300,\)"):
        data.ArraySource(x_path, tmp_path / "short.npy")


def _png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_array_record_source(tmp_path, rng):
    from array_record.python.array_record_module import ArrayRecordWriter

    images = rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 7)
    path = str(tmp_path / "train.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    for image, label in zip(images, labels):
        writer.write(encode_record(_png_bytes(image), int(label)))
    writer.close()
    source = data.ArrayRecordSource(path)
    assert len(source) == 7
    np.testing.assert_array_equal(source.labels, labels)  # read from the records
    for i in (0, 6):
        np.testing.assert_array_equal(source[i]["image"], images[i])
        assert source[i]["label"] == labels[i]
    given = data.ArrayRecordSource([path], labels=labels, rgb=True)
    np.testing.assert_array_equal(given[3]["image"], images[3])
    loader = data.Loader(given, 7, shuffle=False)
    with loader.epoch(0) as it:
        batch = next(it)
    np.testing.assert_array_equal(batch["image"], images)
    with pytest.raises(ValueError, match="ArrayRecordSource: labels must be 7 integers"):
        data.ArrayRecordSource(path, labels=labels[:3])
    with pytest.raises(TypeError, match="ArrayRecordSource: parse must be a function"):
        data.ArrayRecordSource(path, parse=3)


def test_record_format_round_trip(rng):
    image = rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)
    element = decode_record(encode_record(_png_bytes(image), 9))
    np.testing.assert_array_equal(element["image"], image)
    assert element["label"] == 9
    with pytest.raises(TypeError, match="encode_record: image_file must be bytes"):
        encode_record(image, 1)
    with pytest.raises(ValueError, match="ArrayRecordSource: cannot decode the image in an ArrayRecord record"):
        decode_record(encode_record(b"not an image", 1))


def test_tfds_source_without_tensorflow_datasets_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import tensorflow_datasets` raises ImportError
    with pytest.raises(ImportError, match="TFDSSource: needs tensorflow_datasets"):
        data.TFDSSource("mnist", split="train")


def _prepare_tfds(data_dir, images, labels) -> str:
    """A TFDS dataset of `images`/`labels` prepared in array_record format (TFDS's random-access format; the
    image as a uint8 Tensor feature: encoding an Image feature needs TensorFlow, reading never does)."""
    import tensorflow_datasets as tfds

    class JaxnetsTinyDigits(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=images.shape[1:], dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=int(labels.max()) + 1)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (image, label) in enumerate(zip(images, labels)):
                yield i, {"image": image, "label": int(label)}

    JaxnetsTinyDigits(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return "jaxnets_tiny_digits"


def test_tfds_source_reads_a_prepared_dataset(tmp_path, rng):
    images = rng.integers(0, 256, (9, 6, 5, 1), dtype=np.uint8)
    labels = np.array([0, 2, 1, 1, 0, 2, 2, 1, 0])
    name = _prepare_tfds(tmp_path, images, labels)
    source = data.TFDSSource(name, split="train", data_dir=tmp_path)
    assert len(source) == 9
    # TFDS shuffles examples while preparing (by key hash): compare as (image, label) pairs, in its order.
    order = [int(np.flatnonzero((images == source[i]["image"]).all(axis=(1, 2, 3)))[0]) for i in range(9)]
    assert sorted(order) == list(range(9))
    np.testing.assert_array_equal(source.labels, labels[order])  # read once from the examples
    element = source[4]
    assert element["image"].dtype == np.uint8 and element["image"].shape == (6, 5, 1)
    assert isinstance(element["label"], np.int32) and element["label"] == labels[order[4]]
    given = data.TFDSSource(name, split="train", data_dir=tmp_path, labels=source.labels)
    loader = data.Loader(given, 9, shuffle=False)
    with loader.epoch(0) as it:
        batch = next(it)
    np.testing.assert_array_equal(batch["image"], images[order])
    np.testing.assert_array_equal(batch["label"], labels[order])
