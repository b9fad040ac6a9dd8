"""Reading images and masks, and turning them into the tensors a backbone expects.

Every way an image can enter the kit passes through here, so this is where a bad file becomes a
clear :class:`~patchcore_kit.errors.InputError` that names the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T

from .errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


def as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` -> ``(224, 224)``; ``(h, w)`` stays as it is."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, palette and RGBA images all become 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: scale the actual value range to 0-255 instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on black rather than dropping alpha, so transparent areas look empty.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _too_large(path, error: Exception) -> InputError:
    """A decompression bomb (Pillow refuses images above twice ``Image.MAX_IMAGE_PIXELS``)."""
    return InputError(f"{path}: image too large to read safely ({error}); resize it first")


def read_image(path: str | Path) -> Image.Image:
    """Read ``path`` as an 8-bit RGB image, or raise :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such image file")
    if not path.is_file():
        raise InputError(f"{path}: is not a file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise _too_large(path, error) from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: cannot read image ({error})") from None


def read_mask(path: str | Path, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as a boolean array ``(H, W)``.

    Masks are often anti-aliased (in-between values along the edges), so a pixel counts as
    defective above half the range of the file's sample type, whatever its bit depth:

    * 8-bit (grayscale, palette or colour, converted to grayscale first): above 127 of 255;
    * 16-bit (and Pillow's 32-bit integer mode, which holds 16-bit files): above 32767 of 65535;
    * floating point (values 0 to 1): above 0.5; 1-bit: set pixels.

    ``hw=(height, width)`` is the size of the image the mask belongs to (:func:`image_hw`, the
    order of ``image_size`` everywhere in the kit); a mask of another size raises
    :class:`InputError` rather than being silently stretched.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such mask file")
    try:
        with Image.open(path) as mask:
            mask.load()
            if hw is not None and (mask.height, mask.width) != tuple(hw):
                raise InputError(
                    f"{path}: mask is {mask.height}x{mask.width} but its image is {hw[0]}x{hw[1]} (height x width)"
                )
            return _above_half_range(mask)
    except Image.DecompressionBombError as error:
        raise _too_large(path, error) from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (cannot read mask)") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read mask ({error})") from None


def _above_half_range(mask: Image.Image) -> np.ndarray:
    """``True`` where a mask's value is above half the range of its sample type (see ``read_mask``)."""
    if mask.mode == "1":
        return np.asarray(mask, dtype=bool)
    if mask.mode.startswith("I"):  # I;16, I;16B, I;16L ... and I
        return np.asarray(mask).astype(np.int64) > 32767
    if mask.mode == "F":
        return np.asarray(mask, dtype=np.float64) > 0.5
    return np.asarray(mask.convert("L")) > 127


def image_hw(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file without decoding all of it (the kit's order, as ``image_size``)."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Image.DecompressionBombError as error:
        raise _too_large(path, error) from None
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"{path}: cannot read image ({error})") from None


def _array_to_pil(array: np.ndarray, where: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first numpy array
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"{where}: expected an array of shape (H, W) or (H, W, 3|4), got {array.shape}")
    if array.dtype == np.uint8:
        return _to_rgb(Image.fromarray(array))
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{where}: array contains NaN or infinite values")
    if array.max() <= 1.0 and array.min() >= 0.0:
        array = array * 255.0  # float images in [0, 1]
    elif array.max() > 255.0:  # 16-bit style data: rescale the range
        array = (array - array.min()) / max(array.max() - array.min(), 1e-12) * 255.0
    return _to_rgb(Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8)))


def to_pil_list(images: ImageLike | Iterable[ImageLike]) -> list[Image.Image]:
    """Accept file paths, PIL images, numpy arrays or a tensor batch; return RGB PIL images."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    elif isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
        images = [images]
    if isinstance(images, torch.Tensor):
        batch = images.detach().cpu()
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4:
            raise InputError(f"tensor input: expected (B, C, H, W), got {tuple(batch.shape)}")
        images = [b.permute(1, 2, 0).numpy() for b in batch]
    out = []
    for index, item in enumerate(images):
        if isinstance(item, (str, Path)):
            out.append(read_image(item))
        elif isinstance(item, Image.Image):
            out.append(_to_rgb(item))
        elif isinstance(item, torch.Tensor):
            out.append(_array_to_pil(item.detach().cpu().permute(1, 2, 0).numpy(), f"image {index}"))
        elif isinstance(item, np.ndarray):
            out.append(_array_to_pil(item, f"image {index}"))
        else:
            raise InputError(f"image {index}: unsupported input type {type(item).__name__}")
    if not out:
        raise InputError("no images given")
    return out


def preprocess(image_size: int | Sequence[int]) -> T.Compose:
    """The torchvision transform: resize (no crop, so defects at the border stay) and normalise."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(as_hw(image_size), antialias=True),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def image_tensor(images: Sequence[Image.Image], image_size: int | Sequence[int]) -> torch.Tensor:
    """A normalised batch ``(B, 3, H, W)`` ready for the backbone."""
    transform = preprocess(image_size)
    return torch.stack([transform(image) for image in images])


def resize_mask(mask: np.ndarray, image_size: int | Sequence[int]) -> np.ndarray:
    """Resize a boolean mask to the model's map size (bilinear, then >= 0.5: the area-weighted vote)."""
    h, w = as_hw(image_size)
    tensor = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    resized = torch.nn.functional.interpolate(tensor, size=(h, w), mode="bilinear", align_corners=False)
    return resized[0, 0].numpy() >= 0.5


def display_image(image: ImageLike, image_size: int | Sequence[int]) -> np.ndarray:
    """The image as the model saw it, as uint8 RGB ``(H, W, 3)`` for figures."""
    pil = to_pil_list([image])[0]
    h, w = as_hw(image_size)
    return np.asarray(pil.resize((w, h), Image.BILINEAR))
