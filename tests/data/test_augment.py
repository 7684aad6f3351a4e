"""Tests for jaxnets/data/augment.py against numpy references: crops are windows of the padded image, flips
and shifts are exact, randomness is per image and a function of the key (TTA and ensembles:
tests/train/test_evaluation.py).
"""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

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


# One image shape for most tests: the augmentations compile once per shape and option, and compiling is
# what costs time here.
SHAPE = (8, 5, 7, 2)


def images_float(rng, shape=SHAPE):
    return rng.normal(size=shape).astype(np.float32)  # continuous values: every window is unique


def np_shift(image, dy, dx, fill):
    """out[y, x] = image[y - dy, x - dx] where it exists, else fill."""
    h, w, _ = image.shape
    out = np.full_like(image, fill)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[max(-dy, 0):h - max(dy, 0),
                                                                      max(-dx, 0):w - max(dx, 0)]
    return out


def crop_offsets(images, out, pad_h, pad_w, mode):
    """For each image, the offsets (top, left) whose window of the numpy-padded image equals the output."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)), mode=mode)
    return [[(top, left) for top in range(2 * pad_h + 1) for left in range(2 * pad_w + 1)
             if np.array_equal(padded[i, top:top + h, left:left + w], out[i])] for i in range(n)]


# ------------------------------------------------------------------------------------------------
# Shapes, dtypes, keys


RANDOM_AUGMENTATIONS = {
    "crop_constant": partial(random_crop, padding=2),
    "crop_reflect": partial(random_crop, padding=(2, 1), mode="reflect"),
    "flip": random_flip,
    "translate": partial(random_translate, max_shift=(2, 3), fill=3),
}


@pytest.mark.parametrize("name", ["crop_constant", "flip"])
def test_uint8_shapes_and_dtypes_kept(rng, key, name):
    x = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    out = RANDOM_AUGMENTATIONS[name](key, x)
    assert out.shape == SHAPE and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(x)) | {0}  # pixels are moved, never changed


@pytest.mark.parametrize("name", RANDOM_AUGMENTATIONS)
def test_same_key_same_result_different_keys_differ(rng, name):
    fn = RANDOM_AUGMENTATIONS[name]
    x = images_float(rng)
    a, b = fn(jax.random.key(1), x), fn(jax.random.key(1), x)
    assert a.shape == SHAPE and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fn(jax.random.key(2), x))


def test_old_style_keys(rng):
    x = images_float(rng)
    np.testing.assert_array_equal(random_flip(jax.random.PRNGKey(1), x),
                                  random_flip(jax.random.wrap_key_data(jax.random.PRNGKey(1)), x))


# ------------------------------------------------------------------------------------------------
# Crop, translate, flip against numpy


@pytest.mark.parametrize("mode,padding", [("constant", 2), ("constant", (0, 3)), ("constant", 0),
                                          ("reflect", (2, 1)), ("reflect", (1, 4))])
def test_crop_is_a_window_of_the_padded_image(rng, key, mode, padding):
    x = images_float(rng)
    pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
    out = np.asarray(random_crop(key, x, padding=padding, mode=mode))
    offsets = crop_offsets(x, out, pad_h, pad_w, mode)  # numpy's reflect: mirror without the edge pixel
    assert all(len(found) == 1 for found in offsets), offsets
    if padding != 0:
        assert len({found[0] for found in offsets}) > 1  # each image draws its own offset


def test_crop_offsets_cover_the_range(key, rng):
    x = images_float(rng, (300, 3, 3, 1))
    out = np.asarray(random_crop(key, x, padding=1))
    offsets = [found[0] for found in crop_offsets(x, out, 1, 1, "constant")]
    counts = np.array([offsets.count((t, l)) for t in range(3) for l in range(3)])
    # Uniform over 9 offsets: about 33 each; 10 is more than 4 standard deviations below.
    assert counts.sum() == 300 and counts.min() >= 10


def test_translate_shifts_with_fill(rng, key):
    x = images_float(rng)
    out = np.asarray(random_translate(key, x, max_shift=(2, 3), fill=7.0))
    shifts = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-3, 4)
                 if np.array_equal(np_shift(x[i], dy, dx, 7.0), out[i])]
        assert len(found) == 1, (i, found)
        shifts.append(found[0])
    assert len(set(shifts)) > 1
    # Documented: with fill=0 it is the constant-padded crop with the same key.
    np.testing.assert_array_equal(random_translate(key, x, max_shift=2), random_crop(key, x, padding=2))


def test_flip_is_exact(rng, key):
    x = images_float(rng, (32, 5, 7, 2))
    np.testing.assert_array_equal(hflip(x), x[:, :, ::-1, :])
    out = np.asarray(random_flip(key, x))
    flipped = [np.array_equal(out[i], x[i, :, ::-1]) for i in range(len(x))]
    kept = [np.array_equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # each image exactly itself or its mirror
    assert 0 < sum(flipped) < len(x)
    np.testing.assert_array_equal(random_flip(key, x, p=1.0), x[:, :, ::-1, :])
    np.testing.assert_array_equal(random_flip(key, x, p=0.0), x)


# ------------------------------------------------------------------------------------------------
# to_float, normalize: PyTorch parity (torchvision's ToTensor is x.float().div(255); Normalize is sub, div)


def test_to_float_matches_torch(rng):
    x = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    got = to_float(x)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, torch.from_numpy(x).float().div(255).numpy())  # bit for bit
    y = jnp.ones((2, 2), jnp.float32)
    assert to_float(y) is y
    with pytest.raises(TypeError, match=r"to_float: expected uint8 pixels in \[0, 255\] or a floating array, got "
                                        r"int32"):
        to_float(np.zeros(3, np.int32))


def test_normalize_matches_torch(rng):
    x = rng.uniform(size=(3, 4, 5, 3)).astype(np.float32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    expected = ((t - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]).permute(0, 2, 3, 1)
    # Elementwise float32 subtraction and division are correctly rounded in both: equal to the last bit.
    np.testing.assert_array_equal(normalize(x, mean, std), expected.numpy())
    np.testing.assert_array_equal(jax.jit(normalize)(x, jnp.array(mean), jnp.array(std)), expected.numpy())
    np.testing.assert_array_equal(normalize(x, 0.5, 0.25), (x - np.float32(0.5)) / np.float32(0.25))


def test_compose_splits_the_key(rng, key):
    x = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    mean, std = (0.5, 0.4), (0.2, 0.25)
    pipeline = compose(deterministic(to_float), partial(random_crop, padding=2), random_flip,
                       partial(random_translate, max_shift=(2, 3)),
                       deterministic(partial(normalize, mean=mean, std=std)))
    keys = jax.random.split(key, 5)
    cropped = random_crop(keys[1], to_float(x), padding=2)
    expected = normalize(random_translate(keys[3], random_flip(keys[2], cropped), max_shift=(2, 3)), mean, std)
    np.testing.assert_array_equal(pipeline(key, x), expected)
    np.testing.assert_array_equal(jax.jit(pipeline)(key, x), expected)  # every function works under jit
    assert pipeline(key, x).dtype == jnp.float32


# ------------------------------------------------------------------------------------------------
# TTA and ensembles


# ------------------------------------------------------------------------------------------------
# Errors


def test_errors(key):
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"random_crop: expected a batch of images of shape \[N, H, W, C\].*"
                                         r"got \(4, 4, 1\)"):
        random_crop(key, x[0], padding=1)
    with pytest.raises(ValueError, match=r"random_flip: expected a batch of images .*got \(2, 4, 4\)"):
        random_flip(key, x[..., 0])
    with pytest.raises(ValueError, match="random_crop: padding must be >= 0, got -1"):
        random_crop(key, x, padding=-1)
    with pytest.raises(ValueError, match="random_crop: mode must be 'constant' or 'reflect', got 'edge'"):
        random_crop(key, x, padding=1, mode="edge")
    with pytest.raises(ValueError, match=r"random_translate: max_shift must be >= 0, got \(1, -2\)"):
        random_translate(key, x, max_shift=(1, -2))
    with pytest.raises(ValueError, match=r"random_flip: p must be in \[0, 1\], got 1.5"):
        random_flip(key, x, p=1.5)
    with pytest.raises(ValueError, match="hflip: expected a batch of images"):
        hflip(x[0])
    with pytest.raises(TypeError, match="normalize: images must be floating, got uint8; call to_float first"):
        normalize(x.astype(np.uint8), 0.5, 0.5)
    with pytest.raises(ValueError, match=r"normalize: mean must be a scalar or have one value per channel \(1\), "
                                         r"got shape \(3,\)"):
        normalize(x, (0.1, 0.2, 0.3), 1.0)
    with pytest.raises(ValueError, match=r"normalize: std must be positive, got \[0.0\]"):
        normalize(x, 0.0, [0.0])
    with pytest.raises(ValueError, match="compose: expected at least one function"):
        compose()
    with pytest.raises(TypeError, match="compose: argument 1 must be a function"):
        compose(random_flip, 3)


def test_module_exports():
    """`jaxnets.data.__all__` names only what the package defines, once, and re-exports every public
    function of `augment` (the very object, not a copy): a new augmentation left out of the package fails."""
    import inspect

    import jaxnets.data

    exported = jaxnets.data.__all__
    assert len(set(exported)) == len(exported), sorted(n for n in exported if exported.count(n) > 1)
    assert [n for n in exported if not hasattr(jaxnets.data, n)] == []
    public = {name for name, obj in vars(augment).items()
              if inspect.isfunction(obj) and obj.__module__ == augment.__name__ and not name.startswith("_")}
    public -= {"moved_to_train"}  # the deprecation shim for names moved to jaxnets.train, not an augmentation
    assert public, "found no public function in augment"
    assert sorted(public - set(exported)) == []
    assert all(getattr(jaxnets.data, name) is getattr(augment, name) for name in public)


@pytest.mark.parametrize("module", ["jaxnets.data", "jaxnets.data.augment"])
@pytest.mark.parametrize("name", ["tta_predict", "ensemble_predict"])
def test_moved_names_warn_and_work(module, name):
    """tta_predict/ensemble_predict moved to jaxnets.train; the old names work for one release, with a warning."""
    import importlib

    import jaxnets.train

    with pytest.warns(DeprecationWarning, match=rf"{module}.{name} is deprecated .*use jaxnets.train.{name}"):
        old = getattr(importlib.import_module(module), name)
    assert old is getattr(jaxnets.train, name)
    with pytest.raises(AttributeError, match=rf"module '{module}' has no attribute 'no_such_name'"):
        getattr(importlib.import_module(module), "no_such_name")


def test_data_does_not_import_train():
    """Imports point one way: no module of jaxnets.data imports jaxnets.train at module level."""
    import ast
    import pathlib

    import jaxnets.data

    for path in pathlib.Path(jaxnets.data.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("jaxnets.train") for n in names), (path.name, names)
