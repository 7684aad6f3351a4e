"""Tests for jaxnets/data/validation.py: check_dataset accepts the one data format and names every other
input (fn, argument, expected, got), without copying the images; check_arrays."""
import re
import time
import tracemalloc

import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.data import Batches, check_arrays, check_dataset, mnist_sample


def data(n=6, shape=(28, 28, 1), dtype=np.uint8, labels=None):
    labels = np.arange(n) % 10 if labels is None else labels
    return {"image": np.zeros((n, *shape), dtype), "label": np.asarray(labels)}


def test_accepts_the_data_format_and_returns_n():
    assert check_dataset("fit", "train_data", mnist_sample(), image_shape=(28, 28, 1), num_classes=10) == 5000
    assert check_dataset("fit", "train_data", data(7, dtype=np.float32), num_classes=10) == 7
    assert check_dataset("fit", "val_data", data(3, (32, 32, 3), jnp.bfloat16), image_shape=[32, 32, 3]) == 3
    jax_data = {"image": jnp.zeros((4, 8, 8, 1)), "label": jnp.array([0, 1, 2, 9]), "mask": jnp.ones(4, bool)}
    assert check_dataset("fit", "train_data", jax_data, image_shape=(8, 8, 1), num_classes=10) == 4
    assert check_dataset("fit", "train_data", Batches(mnist_sample(), 128), num_classes=10) == 5000
    assert check_dataset("evaluate", "data", data(0), allow_empty=True) == 0
    assert check_dataset("fit", "train_data", data(4, labels=np.array([0, 1, 2, 3], np.uint8)), num_classes=4) == 4


def test_reads_shapes_and_label_extremes_only():
    """A million-image view of one image: a copy or a scan of the images would take 784 MB and seconds."""
    images = np.broadcast_to(np.zeros((1, 28, 28, 1), np.uint8), (1_000_000, 28, 28, 1))
    labels = np.zeros(1_000_000, np.int32)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        n = check_dataset("fit", "train_data", {"image": images, "label": labels}, image_shape=(28, 28, 1),
                          num_classes=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 1_000_000 and peak < 1 << 20 and time.perf_counter() - start < 1.0


@pytest.mark.parametrize("bad,error,message", [
    ([1, 2], TypeError, "fit: train_data must be a dict with 'image' [N, H, W, C] and 'label' [N] or a "
                        "jaxnets.data.Batches, got list."),
    ({"image": np.zeros((2, 28, 28, 1))}, ValueError, "fit: train_data must be a dict with 'image' [N, H, W, C] and "
                                                      "'label' [N], got the keys ['image'] (missing ['label'])."),
    (data(5, (28, 28)), ValueError, "fit: train_data['image'] must be [N, H, W, C] (channels last), got shape "
                                    "(5, 28, 28) without a channel axis; add it with x[..., None]"),
    (data(5, (2, 28, 28, 1)), ValueError, "fit: train_data['image'] must be [N, H, W, C] (rank 4, channels last) or "
                                          "flat features [N, D], got shape (5, 2, 28, 28, 1)."),
    (data(5, dtype=np.int32), TypeError, "fit: train_data['image'] must have dtype uint8 or a floating dtype, got "
                                         "int32."),
    (data(5, dtype=bool), TypeError, "must have dtype uint8 or a floating dtype, got bool."),
    (data(3, labels=np.array(["0", "1", "2"])), TypeError, "fit: train_data['label'] must hold integer class "
                                                           "indices, got dtype <U1; map the classes to 0 .."),
    (data(3, labels=[0.0, 1.0, 2.0]), TypeError, "train_data['label'] must hold integer class indices, got dtype "
                                                 "float64"),
    (data(3, labels=[True, False, True]), TypeError, "got dtype bool"),
    (data(3, labels=[0, 1]), ValueError, "fit: train_data['label'] must have shape [N] = (3,), one integer per "
                                         "image, got (2,)."),
    (data(3, labels=np.eye(3, dtype=np.int32)), ValueError, "got (3, 3) (one-hot? pass class indices: "
                                                            "labels.argmax(-1))."),
    (data(0), ValueError, "fit: train_data must hold at least one example, got N = 0 (images of shape "
                          "(0, 28, 28, 1))."),
    (data(4, labels=[0, 3, 10, 12]), ValueError, "fit: train_data['label'] must be in [0, 10) for a model with 10 "
                                                 "classes, got labels from 0 to 12; use a model with more classes or "
                                                 "remap the labels to 0 .. 9."),
    (data(4, labels=[-1, 3, 0, 2]), ValueError, "got labels from -1 to 3"),
    (data(2, (32, 32, 3)), ValueError, "fit: train_data['image'] must be [N, 28, 28, 1] for this model, got shape "
                                       "(2, 32, 32, 3)."),
    (data(2, (1, 28, 28)), ValueError, "fit: train_data['image'] must be [N, 28, 28, 1] for this model, got shape "
                                       "(2, 1, 28, 28); that looks like NCHW; this model is channels-last NHWC: "
                                       "transpose with x.transpose(0, 2, 3, 1)."),
])
def test_bad_datasets_are_named(bad, error, message):
    with pytest.raises(error, match=re.escape(message)):
        check_dataset("fit", "train_data", bad, image_shape=(28, 28, 1), num_classes=10)


def test_the_message_names_the_argument_and_checks_what_is_asked():
    with pytest.raises(ValueError, match=re.escape("evaluate: val_data['label'] must be in [0, 3)")):
        check_dataset("evaluate", "val_data", data(3, labels=[0, 1, 3]), num_classes=3)
    assert check_dataset("fit", "x", data(3, labels=[0, 1, 300]), image_shape=None, num_classes=None) == 3
    with pytest.raises(ValueError, match=re.escape("got shape (6, 3, 32, 32); that looks like NCHW")):
        check_dataset("fit", "train_data", data(6, (3, 32, 32)), image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=re.escape("fit: train_data['label'] must have shape [N] = (2,)")):
        check_dataset("fit", "train_data", Batches({"image": np.zeros((2, 4, 4, 1)), "label": np.zeros((2, 1), int)},
                                                   1))


def test_option_errors():
    good = data(3)
    with pytest.raises(TypeError, match="fit: num_classes must be an int >= 1, got float 10.0"):
        check_dataset("fit", "train_data", good, num_classes=10.0)
    with pytest.raises(ValueError, match="fit: num_classes must be an int >= 1, got 0"):
        check_dataset("fit", "train_data", good, num_classes=0)
    with pytest.raises(TypeError, match="fit: image_shape must be a tuple \\(H, W, C\\) of 3 ints or None, got int 28"):
        check_dataset("fit", "train_data", good, image_shape=28)
    with pytest.raises(ValueError, match="fit: image_shape must be a tuple \\(H, W, C\\) of 3 positive ints, got "
                                         "\\(28, 28\\)"):
        check_dataset("fit", "train_data", good, image_shape=(28, 28))
    with pytest.raises(ValueError, match="image_shape must be .*3 positive ints, got \\(28, 28, True\\)"):
        check_dataset("fit", "train_data", good, image_shape=(28, 28, True))
    with pytest.raises(TypeError, match="fit: allow_empty must be a Python bool"):
        check_dataset("fit", "train_data", good, allow_empty=1)


def test_check_arrays():
    got = check_arrays("f", "arrays", {"a": [1, 2], "b": jnp.zeros((2, 3))})
    assert all(isinstance(v, np.ndarray) for v in got.values()) and got["b"].shape == (2, 3)
    with pytest.raises(TypeError, match="f: arrays must be a dict of arrays .*got ndarray"):
        check_arrays("f", "arrays", np.zeros(3))
    with pytest.raises(ValueError, match="f: arrays must be a non-empty dict"):
        check_arrays("f", "arrays", {})
    with pytest.raises(ValueError, match=re.escape("f: every array in arrays must have a leading (example) axis; "
                                                   "['s'] are scalars.")):
        check_arrays("f", "arrays", {"a": np.zeros(2), "s": 1.0})
    with pytest.raises(ValueError, match=re.escape("f: all arrays in arrays must have the same length (leading "
                                                   "dimension), got {'a': 2, 'b': 3}.")):
        check_arrays("f", "arrays", {"a": np.zeros(2), "b": np.zeros(3)})
