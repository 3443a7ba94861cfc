"""The corrupt-tta wrapper: uint8 out, shape kept, seeded per image, severity ordered."""

from __future__ import annotations

import numpy as np
import pytest

from clsuite.data.sources import SOURCES
from clsuite.data.variants.corruptions import (
    ABSOLUTE_SCALE, CORRUPTIONS, IMAGENET_C, check_corruption, corrupt_image, corrupt_images, upsample_factor,
)
from clsuite.core.errors import DataError, ParamsError

GREY_OK = [n for n in CORRUPTIONS if n != "saturate"]
# corruptions that draw random numbers (noise, crops, angles, displacement fields)
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "spatter", "elastic_transform"]
DETERMINISTIC = sorted(set(CORRUPTIONS) - set(RANDOM))


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> np.ndarray:
    """12 real MNIST digits, uint8 (12, 1, 28, 28), classes mixed."""
    raw = tmp_path_factory.mktemp("raw") / "mnist5k"
    SOURCES.get("mnist5k").fetch(raw)
    data = SOURCES.get("mnist5k").load(raw)
    rows = [int(np.flatnonzero(data.labels == c)[k]) for k in range(2) for c in range(6)]
    return data.images[rows]


@pytest.fixture(scope="module")
def rgb(digits) -> np.ndarray:
    """A 3-channel image whose channels are three different real digits, uint8 (3, 28, 28)."""
    return np.concatenate([digits[0], digits[1], digits[2]], axis=0)


def test_names_match_the_library():
    import corrupt_tta

    assert set(CORRUPTIONS) == set(corrupt_tta.corruption_dict)
    assert len(IMAGENET_C) == 15 and set(IMAGENET_C) < set(CORRUPTIONS)


@pytest.mark.parametrize("name", GREY_OK)
def test_grey_output_is_uint8_same_shape_and_reproducible(digits, name):
    for severity in (1, 5):
        a = corrupt_images(digits[:2], np.array([4, 9]), name, severity, seed=0)
        b = corrupt_images(digits[:2], np.array([4, 9]), name, severity, seed=0)
        assert a.dtype == np.uint8 and a.shape == digits[:2].shape
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_rgb_output_is_uint8_same_shape_and_reproducible(rgb, name):
    a = corrupt_image(rgb, name, 3, seed=1, row=0)
    b = corrupt_image(rgb, name, 3, seed=1, row=0)
    assert a.dtype == np.uint8 and a.shape == (3, 28, 28)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, rgb)  # severity 3 changes a real image


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_depend_on_seed_and_row(digits, name):
    base = corrupt_image(digits[3], name, 3, seed=0, row=7)
    assert not np.array_equal(base, corrupt_image(digits[3], name, 3, seed=1, row=7))
    assert not np.array_equal(base, corrupt_image(digits[3], name, 3, seed=0, row=8))


@pytest.mark.parametrize("name", [n for n in DETERMINISTIC if n != "saturate"])
def test_deterministic_corruptions_ignore_the_seed(digits, name):
    assert np.array_equal(corrupt_image(digits[3], name, 3, seed=0, row=7),
                          corrupt_image(digits[3], name, 3, seed=5, row=2))


def test_each_image_is_seeded_by_its_row_not_its_position(digits):
    rows = np.array([10, 11, 12, 13])
    batch = corrupt_images(digits[:4], rows, "gaussian_noise", 2, seed=3)
    reversed_batch = corrupt_images(digits[:4][::-1], rows[::-1], "gaussian_noise", 2, seed=3)
    assert np.array_equal(batch, reversed_batch[::-1])
    for i, r in enumerate(rows):
        assert np.array_equal(batch[i], corrupt_image(digits[i], "gaussian_noise", 2, seed=3, row=int(r)))


def test_global_numpy_random_state_is_left_alone(digits):
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    corrupt_image(digits[0], "snow", 2, seed=0, row=0)
    assert np.array_equal(np.random.random(3), expected)


def test_impulse_noise_on_grey_sets_pixels_to_black_or_white(digits):
    x = digits[:6]
    out = corrupt_images(x, np.arange(6), "impulse_noise", 5, seed=0)
    changed = out != x
    assert changed.any()
    assert set(np.unique(out[changed]).tolist()) <= {0, 255}  # salt or pepper, not a luma mix


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "contrast", "zoom_blur", "gaussian_blur"])
def test_mean_absolute_change_grows_with_severity(digits, name):
    rows = np.arange(len(digits))
    mad = [np.abs(corrupt_images(digits, rows, name, s, seed=0).astype(float) - digits).mean() for s in range(1, 6)]
    assert all(a < b for a, b in zip(mad, mad[1:])), mad


def test_upsample_factor():
    assert upsample_factor("frost", 28, 28, 224) == 8
    assert upsample_factor("frost", 32, 32, 224) == 7
    assert upsample_factor("frost", 64, 48, 224) == 5  # ceil(224 / 48)
    assert upsample_factor("frost", 256, 256, 224) == 1
    assert upsample_factor("frost", 28, 28, None) == 1
    assert upsample_factor("gaussian_noise", 28, 28, 224) == 1  # per-pixel: native size
    assert {n for n in CORRUPTIONS if upsample_factor(n, 28, 28, 224) > 1} == ABSOLUTE_SCALE


def test_pixel_scale_blur_is_milder_on_the_work_canvas(digits):
    # sigma 6 px is ImageNet-scale: on the 224-px canvas it blurs far less of a 28-px digit
    rows = np.arange(len(digits))
    native = corrupt_images(digits, rows, "gaussian_blur", 5, seed=0, work_size=None)
    canvas = corrupt_images(digits, rows, "gaussian_blur", 5, seed=0, work_size=224)
    assert np.abs(canvas.astype(float) - digits).mean() < np.abs(native.astype(float) - digits).mean()


def test_unknown_or_colour_only_corruption_is_refused(digits):
    with pytest.raises(ParamsError, match="unknown corruption 'fros'.*frost"):
        check_corruption("fros", 1, "benchmarks.b.variants.corruptions.names")
    with pytest.raises(ParamsError) as info:
        corrupt_image(digits[0], "saturate", 3, seed=0, row=0)
    assert "saturate" in str(info.value) and "remove it from variants.corruptions.names" in str(info.value)


def test_bad_images_and_severities_are_refused(digits):
    with pytest.raises(DataError, match="uint8"):
        corrupt_image(digits[0].astype(np.float32), "contrast", 1, seed=0, row=0)
    with pytest.raises(DataError, match=r"C in \(1, 3\)"):
        corrupt_image(np.zeros((2, 28, 28), np.uint8), "contrast", 1, seed=0, row=0)
    with pytest.raises(ParamsError, match="severity must be in 1..5"):
        corrupt_image(digits[0], "contrast", 6, seed=0, row=0)
    with pytest.raises(DataError, match="2 images but 3 rows"):
        corrupt_images(digits[:2], np.arange(3), "contrast", 1, seed=0)
