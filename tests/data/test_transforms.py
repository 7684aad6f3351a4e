"""Host transforms: torchvision's RandomResizedCrop box rule, Resize's shorter-side rule, CenterCrop's offsets,
flip probability, Normalize against torch, use inside Grain pipelines."""
import math

import grain
import numpy as np
import pytest
import torch

from jaxnets.data import transforms
from jaxnets.data.transforms import (CenterCrop, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize,
                                     random_resized_crop_box, resize_shorter_side)


def _element(image):
    return {"image": image, "label": np.int32(4), "extra": "kept"}


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    height, width = 120, 160
    for _ in range(500):
        top, left, h, w = random_resized_crop_box(rng, height, width, scale=(0.25, 0.5), ratio=(0.5, 2.0))
        assert 0 <= top <= height - h and 0 <= left <= width - w
        # w and h are rounded: the area and ratio hold up to one pixel of rounding on each side.
        assert 0.25 * height * width - (w + h) <= h * w <= 0.5 * height * width + (w + h) + 1
        assert 0.5 * (h - 1) / h - 1e-9 <= w / h * (h - 1) / h <= 2.0 * (h + 1) / h


def test_random_resized_crop_box_placement_is_uniform():
    rng = np.random.default_rng(1)
    tops = [random_resized_crop_box(rng, 100, 100, scale=(0.25, 0.25), ratio=(1.0, 1.0))[0] for _ in range(4000)]
    assert set(np.unique(tops)) == set(range(51))  # h = w = 50: every top in [0, 50] occurs
    assert abs(np.mean(tops) - 25) < 1.0  # mean 25, standard error ~0.23


@pytest.mark.parametrize("shape, expected", [
    ((10, 1000), (0, (1000 - 13) // 2, 10, 13)),   # too wide: height kept, width = round(10 * 4/3)
    ((1000, 10), ((1000 - 13) // 2, 0, 13, 10)),   # too tall: width kept, height = round(10 / (3/4))
])
def test_random_resized_crop_box_falls_back_to_torchvisions_centre_crop(shape, expected):
    # With scale (0.9, 1) no crop of ratio in [3/4, 4/3] fits a 1:100 image: torchvision's fallback.
    rng = np.random.default_rng(0)
    assert random_resized_crop_box(rng, *shape, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) == expected


def test_random_resized_crop_output_and_grain_rng():
    image = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    crop = RandomResizedCrop((24, 16))
    out = crop.random_map(_element(image), np.random.default_rng(3))
    assert out["image"].shape == (24, 16, 3) and out["image"].dtype == np.uint8
    assert out["label"] == 4 and out["extra"] == "kept"
    again = crop.random_map(_element(image), np.random.default_rng(3))
    np.testing.assert_array_equal(out["image"], again["image"])
    # A box covering the whole image gives Resize's pixels.
    whole = RandomResizedCrop((24, 16), scale=(1.0, 1.0), ratio=(1.5, 1.5)).random_map(
        _element(image), np.random.default_rng(0))
    np.testing.assert_array_equal(whole["image"], Resize((24, 16)).map(_element(image))["image"])


def test_resize_shorter_side_rule():
    assert resize_shorter_side(375, 500, 256) == (256, 341)  # int(256 * 500 / 375) = int(341.33)
    assert resize_shorter_side(500, 375, 256) == (341, 256)
    assert resize_shorter_side(300, 300, 224) == (224, 224)
    out = Resize(8).map(_element(np.zeros((30, 45, 1), np.uint8)))["image"]
    assert out.shape == (8, 12, 1)


def test_resize_matches_torch_antialiased_bilinear():
    """torchvision's Resize on PIL images is Pillow's; torch's antialiased bilinear interpolation on tensors
    computes the same filter, so the two agree to within one level of rounding."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ours = Resize((20, 29)).map(_element(image))["image"].astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    theirs = torch.nn.functional.interpolate(x, size=(20, 29), mode="bilinear", antialias=True,
                                             align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - theirs).max() <= 1.0


def test_center_crop_offsets_and_padding():
    image = np.arange(6 * 9, dtype=np.uint8).reshape(6, 9, 1)
    out = CenterCrop(3).map(_element(image))["image"]
    # top = round((6 - 3) / 2) = round(1.5) = 2, left = round(3.0) = 3 (Python's round, as torchvision)
    np.testing.assert_array_equal(out, image[2:5, 3:6])
    small = np.ones((2, 3, 1), np.uint8)
    padded = CenterCrop((4, 4)).map(_element(small))["image"]
    expected = np.zeros((4, 4, 1), np.uint8)
    expected[1:3, 0:3] = 1  # pad 1 top/1 bottom, 0 left/1 right, then the (0, 0) crop
    np.testing.assert_array_equal(padded, expected)


def test_horizontal_flip_probability():
    image = np.arange(12, dtype=np.uint8).reshape(2, 6, 1)
    rng = np.random.default_rng(0)
    assert all(np.array_equal(RandomHorizontalFlip(0.0).random_map(_element(image), rng)["image"], image)
               for _ in range(20))
    assert all(np.array_equal(RandomHorizontalFlip(1.0).random_map(_element(image), rng)["image"], image[:, ::-1])
               for _ in range(20))
    flips = sum(not np.array_equal(RandomHorizontalFlip().random_map(_element(image), rng)["image"], image)
                for _ in range(2000))
    assert abs(flips - 1000) < 4 * math.sqrt(2000 * 0.25)  # binomial(2000, 0.5): 4 standard deviations


def test_normalize_matches_torch():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    ours = Normalize().map(_element(image))["image"]
    x = torch.from_numpy(image).float().div(255)  # ToTensor (HWC kept)
    theirs = ((x - torch.tensor(transforms.IMAGENET_MEAN)) / torch.tensor(transforms.IMAGENET_STD)).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_presets_and_grain_pipeline():
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    element = _element(image)
    rng = np.random.default_rng(0)
    for t in transforms.imagenet_train(32):
        element = t.random_map(element, rng)
    assert element["image"].shape == (32, 32, 3)
    element = _element(image)
    for t in transforms.imagenet_eval(32, resize=36, normalize=True):
        element = t.map(element)
    assert element["image"].shape == (32, 32, 3) and element["image"].dtype == np.float32
    # The same objects work in a Grain pipeline of one's own.
    dataset = grain.MapDataset.source([_element(image)] * 4).random_map(RandomResizedCrop(8), seed=0)
    dataset = dataset.map(CenterCrop(4))
    assert dataset[3]["image"].shape == (4, 4, 3)


def test_transform_errors():
    with pytest.raises(TypeError, match="RandomResizedCrop: size must be an int or a tuple of 2 ints"):
        RandomResizedCrop(2.5)
    with pytest.raises(ValueError, match=r"RandomResizedCrop: scale must lie in \(0, 1\]"):
        RandomResizedCrop(4, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"RandomResizedCrop: ratio must be \(low, high\) with low <= high"):
        RandomResizedCrop(4, ratio=(2.0, 1.0))
    with pytest.raises(TypeError, match=r"RandomResizedCrop: scale must be a pair \(low, high\)"):
        RandomResizedCrop(4, scale=0.5)
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: p must be a finite real number in \[0.0, 1.0\]"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(TypeError, match="RandomHorizontalFlip: p must be a real number"):
        RandomHorizontalFlip(True)
    with pytest.raises(ValueError, match="Normalize: mean must be non-empty and std positive"):
        Normalize(std=(0.2, 0.0, 0.2))
    with pytest.raises(TypeError, match="Normalize: expected uint8 pixels"):
        Normalize().map(_element(np.zeros((2, 2, 3), np.float32)))
    with pytest.raises(TypeError, match="Resize: expected an example dict with an 'image'"):
        Resize(4).map(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"CenterCrop: the image must be \[H, W, C\]"):
        CenterCrop(1).map(_element(np.zeros((2, 2), np.uint8)))
