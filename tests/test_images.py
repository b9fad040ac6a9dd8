"""images.py: every way an image or mask enters the kit, and every way a file can be bad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from patchcore_kit.errors import InputError
from patchcore_kit.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_hw,
    image_tensor,
    read_image,
    read_mask,
    resize_mask,
    to_pil_list,
)


def rgb_pixels(height=12, width=10, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# --- read_image: colour modes and bit depths ------------------------------------------------------
def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = rgb_pixels()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (10, 12)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = rgb_pixels()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = np.asarray(read_image(tmp_path / "g.png"))
    assert image.shape == (12, 10, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_rgba_is_composited_on_black(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., :3] = (200, 100, 50)
    pixels[:2, :, 3] = 255  # top half opaque
    pixels[2:, :, 3] = 0  # bottom half fully transparent
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "a.png")
    image = np.asarray(read_image(tmp_path / "a.png"))
    assert image.shape == (4, 4, 3)
    np.testing.assert_array_equal(image[:2].reshape(-1, 3), np.tile([200, 100, 50], (8, 1)))
    np.testing.assert_array_equal(image[2:], 0)


def test_palette_image_gives_its_palette_colours(tmp_path):
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette_image.save(tmp_path / "p.png")
    image = np.asarray(read_image(tmp_path / "p.png"))
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(image[0, 1], [0, 255, 0])
    np.testing.assert_array_equal(image[1, 0], [0, 0, 255])


def test_16_bit_png_is_scaled_to_its_range_not_clipped(tmp_path):
    # Values far above 255: plain clipping would make the whole image white.
    values = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    image = np.asarray(read_image(tmp_path / "deep.png"))
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    expected = np.round((values - 1000) / 4000 * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], expected)
    assert image[0, 0, 0] == 0 and image[1, 1, 0] == 255


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg", quality=95)
    image = read_image(tmp_path / "c.jpg")
    assert image.mode == "RGB"
    red, green, blue = np.asarray(image).reshape(-1, 3).mean(0)
    assert red > 200 and green < 60 and blue < 60


# --- read_image: bad files ----------------------------------------------------------------------
def assert_names_path(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert message.startswith(str(path)), message
    return message


def test_truncated_png_raises_input_error_naming_it(tmp_path):
    Image.fromarray(rgb_pixels(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "cut.png")
    assert "cannot read" in assert_names_path(error, tmp_path / "cut.png")


def test_truncated_jpeg_raises_input_error_naming_it(tmp_path):
    Image.fromarray(rgb_pixels(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "cut.jpg")
    assert_names_path(error, tmp_path / "cut.jpg")


def test_garbage_bytes_and_text_files_are_not_images(tmp_path):
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "notes.txt").write_text("hello")
    for name in ("noise.png", "notes.txt"):
        with pytest.raises(InputError) as error:
            read_image(tmp_path / name)
        assert "not an image" in assert_names_path(error, tmp_path / name)


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "nope.png")
    assert "no such" in assert_names_path(error, tmp_path / "nope.png")
    with pytest.raises(InputError) as error:
        read_image(tmp_path)
    assert_names_path(error, tmp_path)


def test_read_image_leaves_the_file_untouched(tmp_path):
    Image.fromarray(rgb_pixels()).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    read_image(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == before


# --- to_pil_list: every input kind gives the same RGB image ----------------------------------------
def test_every_input_kind_gives_the_same_pixels(tmp_path):
    pixels = rgb_pixels()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    as_float = pixels.astype(np.float32) / 255.0
    tensor = torch.from_numpy(as_float).permute(2, 0, 1)
    kinds = {
        "str path": str(tmp_path / "a.png"),
        "Path": tmp_path / "a.png",
        "PIL": Image.fromarray(pixels),
        "uint8 HxWx3": pixels,
        "float HxWx3 in [0,1]": as_float,
        "float64 0-255": pixels.astype(np.float64),
        "channels-first numpy": np.moveaxis(pixels, -1, 0),
        "tensor CxHxW": tensor,
    }
    for name, item in kinds.items():
        images = to_pil_list(item)
        assert len(images) == 1, name
        assert images[0].mode == "RGB", name
        np.testing.assert_array_equal(np.asarray(images[0]), pixels, err_msg=name)


def test_lists_and_batches_keep_order_and_length(tmp_path):
    batch = np.stack([rgb_pixels(seed=s) for s in range(3)])
    tensor_batch = torch.from_numpy(batch.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    for name, images in {
        "tensor batch": to_pil_list(tensor_batch),
        "numpy batch": to_pil_list(batch),
        "list of arrays": to_pil_list(list(batch)),
        "mixed list": to_pil_list([batch[0], Image.fromarray(batch[1]), tensor_batch[2]]),
    }.items():
        assert len(images) == 3, name
        for image, expected in zip(images, batch):
            np.testing.assert_array_equal(np.asarray(image), expected, err_msg=name)


def test_grayscale_arrays_and_pil_modes_become_rgb():
    gray = rgb_pixels()[..., 0]
    for item in (gray, gray[..., None], Image.fromarray(gray, mode="L"), Image.fromarray(gray).convert("1")):
        image = to_pil_list(item)[0]
        assert image.mode == "RGB" and image.size == (10, 12)
    np.testing.assert_array_equal(np.asarray(to_pil_list(gray)[0])[..., 1], gray)


def test_bad_array_inputs_raise_input_error():
    with pytest.raises(InputError, match="shape"):
        to_pil_list([np.zeros((5, 5, 5))])
    with pytest.raises(InputError, match="NaN"):
        to_pil_list([np.full((4, 4), np.nan)])
    with pytest.raises(InputError, match="unsupported"):
        to_pil_list([42])
    with pytest.raises(InputError, match="no images"):
        to_pil_list([])
    with pytest.raises(InputError, match="tensor"):
        to_pil_list(torch.zeros(2, 2, 3, 4, 4))


# --- masks ----------------------------------------------------------------------------------------
def test_anti_aliased_mask_is_thresholded_above_127(tmp_path):
    values = np.array([[0, 64, 127], [128, 200, 255]], dtype=np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [[False, False, False], [True, True, True]])


def test_mask_size_mismatch_names_the_mask(tmp_path):
    Image.fromarray(np.zeros((6, 8), np.uint8), mode="L").save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", hw=(6, 8)).shape == (6, 8)  # (height, width) matches
    with pytest.raises(InputError) as error:
        read_mask(tmp_path / "m.png", hw=(8, 6))
    message = assert_names_path(error, tmp_path / "m.png")
    assert "8x6" in message and "6x8" in message


def test_missing_or_corrupt_mask_names_the_file(tmp_path):
    with pytest.raises(InputError) as error:
        read_mask(tmp_path / "none.png")
    assert_names_path(error, tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError) as error:
        read_mask(tmp_path / "bad.png")
    assert_names_path(error, tmp_path / "bad.png")


def test_rgb_and_16_bit_masks(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1:3, 1:3] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), rgb[..., 0] > 0)
    deep = (rgb[..., 0].astype(np.uint16)) * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "deep.png"), rgb[..., 0] > 0)


def test_anti_aliased_16_bit_mask_is_thresholded_at_half_its_range(tmp_path):
    # A faint anti-aliased edge (256 of 65535) is not a defect, just as 1 of 255 is not in 8 bits.
    values = np.array([[0, 256, 32767], [32768, 40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    expected = [[False, False, False], [True, True, True]]
    np.testing.assert_array_equal(read_mask(tmp_path / "deep.png"), expected)
    # the same anti-aliased mask in 8 bits and 16 bits gives the same pixels
    edge = np.tile(np.arange(256, dtype=np.uint16), (2, 1))
    Image.fromarray(edge.astype(np.uint8), mode="L").save(tmp_path / "edge8.png")
    Image.fromarray(edge * 257).save(tmp_path / "edge16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "edge16.png"), read_mask(tmp_path / "edge8.png"))
    assert read_mask(tmp_path / "edge16.png").sum() == 2 * 128


def test_float_and_1_bit_masks_are_thresholded_at_half_their_range(tmp_path):
    Image.fromarray(np.array([[0.0, 0.3, 0.5], [0.51, 0.9, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_mask(tmp_path / "f.tif"), [[False, False, False], [True, True, True]])
    bits = np.array([[0, 1, 0], [1, 1, 0]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), bits)


def test_resize_mask_keeps_a_block_in_place():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 8:12] = True
    small = resize_mask(mask, 8)
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:6] = True
    np.testing.assert_array_equal(small, expected)
    assert resize_mask(mask, (32, 16)).shape == (32, 16)


# --- tensors for the backbone ---------------------------------------------------------------------
def test_image_tensor_resizes_and_normalises():
    images = [Image.new("RGB", (40, 20), (255, 0, 128)), Image.new("RGB", (10, 10), (0, 0, 0))]
    batch = image_tensor(images, (16, 24))
    assert batch.shape == (2, 3, 16, 24) and batch.dtype == torch.float32
    white_red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    black_blue = (0.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]
    assert torch.allclose(batch[0, 0], torch.tensor(white_red), atol=1e-5)
    assert torch.allclose(batch[1, 2], torch.tensor(black_blue), atol=1e-5)
    assert as_hw(32) == (32, 32) and as_hw((16, 24)) == (16, 24)
