"""The built-in demo dataset: defects that match their masks, the MVTec layout, seeding and caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchcore_kit import paths
from patchcore_kit.data import demo
from patchcore_kit.data.demo import DEFECT_TYPES, DEFECTS, DEMO_CATEGORIES, MANIFEST_NAME, build_demo_dataset
from patchcore_kit.data.demo import build as demo_build
from patchcore_kit.data.demo import tiles as demo_tiles
from patchcore_kit.errors import InputError

TINY = dict(n_train=3, n_test_good=2, n_test_per_defect=2, image_size=64, progress=False)
SMALLEST = dict(n_train=2, n_test_good=1, n_test_per_defect=1, image_size=64, progress=False)


def _tile(category: str, seed: int, size: int) -> np.ndarray:
    return demo.random_tile(demo.texture_image(category), np.random.default_rng(seed), size, region="test")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", categories=("brick", "tissue"), **TINY)


# ---- the defect functions ------------------------------------------------------------------
@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_defect_changes_the_tile_only_inside_its_mask(defect_type, category):
    for size, seed in [(64, 0), (64, 1), (96, 2)]:
        tile = _tile(category, seed, size)
        before = tile.copy()
        defected, mask = DEFECTS[defect_type](tile, np.random.default_rng(seed))

        assert np.array_equal(tile, before), "the input tile must not be modified"
        assert defected.shape == tile.shape and defected.dtype == np.uint8
        assert mask.shape == tile.shape[:2] and mask.dtype == bool
        assert 0.004 <= mask.mean() <= 0.09, f"{defect_type}: area {mask.mean():.2%} of the tile"

        change = np.abs(defected.astype(int) - tile.astype(int)).max(axis=-1)
        assert (change[~mask] == 0).all(), "pixels outside the mask must be untouched"
        assert change[mask].mean() >= 20, f"{defect_type}: barely visible ({change[mask].mean():.1f} levels)"
        # The mask is tight: nearly every marked pixel visibly changed.
        assert (change[mask] > 4).mean() >= 0.9


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_defects_are_determined_by_the_generator(defect_type):
    tile = _tile("gravel", 0, 64)
    first = DEFECTS[defect_type](tile, np.random.default_rng(5))
    again = DEFECTS[defect_type](tile, np.random.default_rng(5))
    other = DEFECTS[defect_type](tile, np.random.default_rng(6))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_defect_rejects_a_non_rgb_tile():
    with pytest.raises(ValueError, match="uint8 RGB"):
        DEFECTS["hole"](np.zeros((32, 32), np.uint8), np.random.default_rng(0))


def test_perlin_noise_is_seeded_bounded_and_smooth():
    noise = demo.perlin_noise((64, 64), 4, np.random.default_rng(0))
    assert np.array_equal(noise, demo.perlin_noise((64, 64), 4, np.random.default_rng(0)))
    assert not np.array_equal(noise, demo.perlin_noise((64, 64), 4, np.random.default_rng(1)))
    assert np.abs(noise).max() <= 1.0 and noise.std() > 0.1
    # 16 pixels per lattice cell: neighbours differ far less than the field's range
    assert np.abs(np.diff(noise, axis=1)).max() < 0.25 * np.ptp(noise)
    fractal = demo.fractal_noise((64, 64), np.random.default_rng(0), cells=4, octaves=3)
    assert fractal.shape == (64, 64) and np.abs(fractal).max() <= 1.0


# ---- nominal tiles -------------------------------------------------------------------------
@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_textures_are_real_rgb_photographs(category):
    photo = demo.texture_image(category)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
    assert min(photo.shape[:2]) >= 256 and photo.std() > 20
    assert not photo.flags.writeable


def test_unknown_texture_is_an_input_error():
    with pytest.raises(InputError, match="unknown demo category"):
        demo.texture_image("marble")


def _painted_by_region(shape: tuple[int, int]) -> np.ndarray:
    """A photograph dark on the training cells, bright on the test cells and mid-grey in the gaps."""
    photo = np.full((*shape, 3), 125, np.uint8)
    for region, level in (("train", 50), ("test", 200)):
        for top, bottom, left, right in demo.region_cells(shape, region):
            photo[int(top) : int(bottom) + 1, int(left) : int(right) + 1] = level
    return photo


@pytest.mark.parametrize("shape", [(300, 300), (256, 384), (512, 512)])
def test_train_and_test_tiles_come_from_separate_cells(shape):
    # Any crop that crossed into a gap or a cell of the other region would mix in another level.
    photo = _painted_by_region(shape)
    assert (photo == 50).any() and (photo == 200).any()
    jitter = demo_tiles._BRIGHTNESS_JITTER
    for seed in range(20):
        train = demo.random_tile(photo, np.random.default_rng(seed), 48, region="train")
        test = demo.random_tile(photo, np.random.default_rng(seed), 48, region="test")
        assert 50 * (1 - jitter) - 1 <= train.min() and train.max() <= 50 * (1 + jitter) + 1
        assert 200 * (1 - jitter) - 1 <= test.min() and test.max() <= 200 * (1 + jitter) + 1


def test_region_cells_interleave_like_a_chessboard_with_a_gap():
    train, test = demo.region_cells((512, 512), "train"), demo.region_cells((512, 512), "test")
    assert (len(train), len(test)) == ((demo.GRID**2 + 1) // 2, demo.GRID**2 // 2)
    assert sorted(train + test) == sorted(set(train + test))  # no cell in both
    for region in (train, test):
        # Each region reaches every side of the photograph: both halves across and both down.
        assert min(c[0] for c in region) == 0 and max(c[1] for c in region) == 511
        assert min(c[2] for c in region) == 0 and max(c[3] for c in region) == 511
    for a in train:
        for b in test:
            apart_y = max(b[0] - a[1], a[0] - b[1]) - 1  # pixels strictly between the two cells
            apart_x = max(b[2] - a[3], a[2] - b[3]) - 1
            assert max(apart_y, apart_x) >= demo.GAP
    with pytest.raises(ValueError, match="region must be"):
        demo.region_cells((512, 512), "validation")


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_train_and_test_tiles_never_overlap_in_the_source_photo(category):
    # The boxes around the rotated crops (everything a crop samples) of the dataset's own draws.
    shape = demo.texture_image(category).shape
    parameters = dict(seed=0, n_train=40, n_test_good=10, n_test_per_defect=4)

    def boxes(part: int, count: int, region: str) -> list[tuple[float, float, float, float]]:
        found = []
        for index in range(count):
            y, x, _, _, half = demo.tile_placement(shape, demo_build._image_rng(0, category, part, index), region)
            box = (y - half, y + half, x - half, x + half)
            assert any(
                top <= box[0] and box[1] <= bottom and left <= box[2] and box[3] <= right
                for top, bottom, left, right in demo.region_cells(shape, region)
            ), f"{region} crop {box} is not inside one of its cells"
            found.append(box)
        return found

    train = boxes(0, parameters["n_train"], "train")
    test = boxes(1, parameters["n_test_good"], "test")
    for offset in range(len(DEFECT_TYPES)):
        test += boxes(2 + offset, parameters["n_test_per_defect"], "test")
    for a in train:
        for b in test:
            separated_y = a[1] + demo.GAP <= b[0] or b[1] + demo.GAP <= a[0]
            separated_x = a[3] + demo.GAP <= b[2] or b[3] + demo.GAP <= a[2]
            assert separated_y or separated_x, (a, b)
    # Interleaved: training tiles (and test tiles) come from both halves, across and down.
    for found in (train, test):
        across = np.array([(box[2] + box[3]) / 2 for box in found])
        down = np.array([(box[0] + box[1]) / 2 for box in found])
        assert (across < shape[1] / 2).any() and (across > shape[1] / 2).any()
        assert (down < shape[0] / 2).any() and (down > shape[0] / 2).any()


def test_the_largest_tile_fits_a_cell_of_every_demo_photo():
    # Otherwise tile_placement falls back to a cell's centre and a crop could spill over its cell.
    largest = demo_tiles._CROP_FRACTION * (1 + demo_tiles._SCALE_JITTER)
    largest *= np.cos(np.deg2rad(45 - demo_tiles._MAX_ROTATION_DEGREES)) * np.sqrt(2)  # rotated: cos + sin
    for category in DEMO_CATEGORIES:
        shape = demo.texture_image(category).shape
        for region in ("train", "test"):
            for top, bottom, left, right in demo.region_cells(shape, region):
                assert largest * min(shape[:2]) + 8 <= min(bottom - top, right - left), (category, region)


def test_random_tile_rejects_an_unknown_region():
    with pytest.raises(ValueError, match="region must be 'train' or 'test'"):
        demo.random_tile(demo.texture_image("brick"), np.random.default_rng(0), 64, region="left")


def test_random_tiles_vary_but_stay_alike():
    tiles = [_tile("grass", seed, 64).astype(float) for seed in range(4)]
    assert all(not np.array_equal(tiles[0], other) for other in tiles[1:])
    means = [t.mean() for t in tiles]
    assert max(means) - min(means) < 40  # mild augmentation: same material, similar brightness


# ---- the dataset on disk -------------------------------------------------------------------
def test_layout_is_mvtec_with_a_mask_for_every_defect_image(tiny_root):
    assert (tiny_root / MANIFEST_NAME).is_file()
    for category in ("brick", "tissue"):
        folder = tiny_root / category
        train = sorted(p.name for p in (folder / "train" / "good").iterdir())
        assert train == ["000.png", "001.png", "002.png"]
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(("good",) + DEFECT_TYPES)
        assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
        assert len(list((folder / "test" / "good").glob("*.png"))) == 2
        for defect_type in DEFECT_TYPES:
            images = sorted((folder / "test" / defect_type).glob("*.png"))
            masks = sorted((folder / "ground_truth" / defect_type).glob("*.png"))
            assert [p.name for p in images] == ["000.png", "001.png"]
            assert [p.name for p in masks] == [f"{p.stem}_mask.png" for p in images]
            for image_path, mask_path in zip(images, masks):
                with Image.open(image_path) as image, Image.open(mask_path) as mask:
                    assert image.mode == "RGB" and image.size == (64, 64)
                    assert mask.mode == "L" and mask.size == (64, 64)
                    values = np.asarray(mask)
                assert set(np.unique(values)) == {0, 255}


def test_saved_masks_match_the_saved_defects(tiny_root):
    # Re-create the clean tile of a saved defect image from its seed: they differ only under the mask.
    manifest = json.loads((tiny_root / MANIFEST_NAME).read_text())["parameters"]
    for offset, defect_type in enumerate(DEFECT_TYPES):
        rng = demo_build._image_rng(manifest["seed"], "brick", 2 + offset, 1)
        clean = demo.random_tile(demo.texture_image("brick"), rng, manifest["image_size"], "test")
        saved = np.asarray(Image.open(tiny_root / "brick" / "test" / defect_type / "001.png"))
        mask = np.asarray(Image.open(tiny_root / "brick" / "ground_truth" / defect_type / "001_mask.png")) > 127
        change = np.abs(saved.astype(int) - clean.astype(int)).max(axis=-1)
        assert (change[~mask] == 0).all() and change[mask].mean() >= 20


def test_the_mvtec_loader_reads_the_demo(tiny_root):
    from patchcore_kit.data import load_mvtec

    split = load_mvtec(tiny_root, "tissue")
    assert len(split.train) == 3 and split.has_masks
    anomalous = [s for s in split.test if s.label == 1]
    assert len(anomalous) == 2 * len(DEFECT_TYPES) and all(s.mask_path is not None for s in anomalous)
    assert sum(s.label == 0 for s in split.test) == 2


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    first = build_demo_dataset(tmp_path / "a", categories=("grass",), seed=3, **SMALLEST)
    again = build_demo_dataset(tmp_path / "b", categories=("grass",), seed=3, **SMALLEST)
    other = build_demo_dataset(tmp_path / "c", categories=("grass",), seed=4, **SMALLEST)
    assert _files(first) == _files(again)
    first_files, other_files = _files(first), _files(other)
    images = [name for name in first_files if name.endswith(".png")]
    assert images and all(first_files[name] != other_files[name] for name in images)


def test_a_valid_build_is_reused_without_rewriting(tmp_path):
    root = build_demo_dataset(tmp_path / "demo", categories=("gravel", "grass"), **SMALLEST)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert build_demo_dataset(root, categories=("gravel", "grass"), **SMALLEST) == root
    assert build_demo_dataset(root, categories=("gravel",), **SMALLEST) == root  # a subset is enough
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


@pytest.mark.parametrize("change", [{"n_train": 3}, {"seed": 1}, {"image_size": 48}, {"categories": ("brick",)}])
def test_a_build_with_other_parameters_is_replaced(tmp_path, change):
    root = build_demo_dataset(tmp_path / "demo", categories=("gravel",), **SMALLEST)
    (root / "gravel" / "marker.txt").write_text("from the old build")
    arguments = {**SMALLEST, "categories": ("gravel",), **change}
    build_demo_dataset(root, **arguments)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["categories"] == list(arguments["categories"])
    assert manifest["parameters"]["n_train"] == arguments["n_train"]
    assert not (root / "gravel" / "marker.txt").exists()
    category = arguments["categories"][0]
    assert len(list((root / category / "train" / "good").glob("*.png"))) == arguments["n_train"]
    assert [p.name for p in tmp_path.iterdir()] == ["demo"], "no temporary or retired folders left"


def test_a_build_of_an_older_generator_is_replaced(tmp_path, monkeypatch):
    # Users with a data/demo from before a generator change get the new data, not the old cache.
    monkeypatch.setattr(demo_build, "GENERATOR_VERSION", demo_build.GENERATOR_VERSION - 1)
    root = build_demo_dataset(tmp_path / "demo", categories=("tissue",), **SMALLEST)
    (root / "tissue" / "marker.txt").write_text("from the old build")
    monkeypatch.undo()
    build_demo_dataset(root, categories=("tissue",), **SMALLEST)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["parameters"]["generator_version"] == demo.GENERATOR_VERSION
    assert not (root / "tissue" / "marker.txt").exists()
    assert _files(root) == _files(build_demo_dataset(tmp_path / "fresh", categories=("tissue",), **SMALLEST))


def test_force_and_an_incomplete_build_both_rebuild(tmp_path):
    root = build_demo_dataset(tmp_path / "demo", categories=("brick",), **SMALLEST)
    (root / "brick" / "marker.txt").write_text("x")
    build_demo_dataset(root, categories=("brick",), force=True, **SMALLEST)
    assert not (root / "brick" / "marker.txt").exists()
    (root / "brick" / "test" / "hole" / "000.png").unlink()  # someone deleted an image
    build_demo_dataset(root, categories=("brick",), **SMALLEST)
    assert (root / "brick" / "test" / "hole" / "000.png").is_file()


def test_a_failing_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(tile, rng):
        raise RuntimeError("simulated failure halfway through")

    monkeypatch.setitem(DEFECTS, "stain", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        build_demo_dataset(tmp_path / "demo", categories=("brick",), **SMALLEST)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_rebuild_keeps_the_previous_build(tmp_path, monkeypatch):
    root = build_demo_dataset(tmp_path / "demo", categories=("brick",), **SMALLEST)
    before = _files(root)

    def broken(tile, rng):
        raise KeyboardInterrupt  # the user stops the build

    monkeypatch.setitem(DEFECTS, "perlin", broken)
    with pytest.raises(KeyboardInterrupt):
        build_demo_dataset(root, categories=("brick",), force=True, **SMALLEST)
    assert _files(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


@pytest.mark.parametrize("manifest", [None, '{"generator": "something else"}', "not json"])
def test_a_folder_that_is_not_a_demo_build_is_never_touched(tmp_path, manifest):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("my own file")
    if manifest is not None:
        (root / MANIFEST_NAME).write_text(manifest)
    before = _files(root)
    with pytest.raises(InputError, match=r"mine: folder exists and is not a demo dataset"):
        build_demo_dataset(root, categories=("brick",), **SMALLEST)
    assert _files(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"categories": ("marble",)}, "unknown demo categories"),
        ({"categories": ()}, "unknown demo categories"),
        ({"n_train": 0}, "n_train must be a positive integer"),
        ({"n_test_per_defect": 1.5}, "n_test_per_defect must be a positive integer"),
        ({"image_size": 8}, "image_size must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_are_input_errors_naming_the_root(tmp_path, arguments, problem):
    with pytest.raises(InputError, match=problem) as raised:
        build_demo_dataset(tmp_path / "demo", **{**SMALLEST, "categories": ("brick",), **arguments})
    assert str(raised.value).startswith(str(tmp_path / "demo"))
    assert not (tmp_path / "demo").exists()


def test_default_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PATCHCORE_KIT_DATA", str(tmp_path))
    assert demo.default_demo_root() == tmp_path / "demo"
    monkeypatch.delenv("PATCHCORE_KIT_DATA")

    # A source checkout keeps its data in <repository>/data ...
    checkout = tmp_path / "checkout"
    (checkout / "patchcore_kit" / "data").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    monkeypatch.setattr(paths, "__file__", str(checkout / "patchcore_kit" / "paths.py"))
    assert demo.default_demo_root() == checkout / "data" / "demo"

    # ... an installed package in the user's cache.
    installed = tmp_path / "site-packages" / "patchcore_kit"
    installed.mkdir(parents=True)
    monkeypatch.setattr(paths, "__file__", str(installed / "paths.py"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.default_demo_root() == tmp_path / "home" / ".cache" / "patchcore_kit" / "demo"


def test_manifest_records_parameters_and_sources(tiny_root):
    manifest = json.loads((tiny_root / MANIFEST_NAME).read_text())
    assert manifest["categories"] == ["brick", "tissue"]
    assert manifest["parameters"] == {
        "generator_version": demo.GENERATOR_VERSION,
        "seed": 0,
        "image_size": 64,
        "n_train": 3,
        "n_test_good": 2,
        "n_test_per_defect": 2,
        "defect_types": list(DEFECT_TYPES),
    }
    assert set(manifest["sources"]) == {"brick", "tissue"}
