"""Dataset loaders: MVTec layout, plain folders, MTD tile grouping and the seeded splits."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest

from patchcore_kit.data import (
    Sample,
    Split,
    list_images,
    load_dataset,
    load_folder,
    load_mtd,
    load_mvtec,
    mvtec_categories,
    read_sample_mask,
    tile_groups,
)
from patchcore_kit.errors import InputError


# --- MVTec layout -----------------------------------------------------------------------------
def test_mvtec_layout_is_parsed(make_mvtec):
    root = make_mvtec(n_train=4, test={"good": 2, "scratch": 3, "crack": 1})
    split = load_mvtec(root, "widget")
    assert split.name == "mvtec/widget" and split.has_masks
    assert [p.name for p in split.train_paths] == ["000.png", "001.png", "002.png", "003.png"]
    assert all(s.label == 0 and s.defect_type == "good" for s in split.train)
    # nominal test images first, then defect types in name order
    assert split.test_defect_types == ["good", "good", "crack", "scratch", "scratch", "scratch"]
    assert split.test_labels.tolist() == [0, 0, 1, 1, 1, 1]
    for sample in split.test:
        if sample.label:
            expected = root / "widget" / "ground_truth" / sample.defect_type / f"{sample.path.stem}_mask.png"
            assert sample.mask_path == expected
        else:
            assert sample.mask_path is None
    # groups are unique per image even though stems repeat across folders
    assert len({s.group for s in split.train + split.test}) == 10


def test_mvtec_masks_read_at_image_size(make_mvtec):
    split = load_mvtec(make_mvtec(size=(20, 12)), "widget")
    nominal, defective = split.test[0], split.test[-1]
    assert read_sample_mask(nominal).shape == (12, 20) and not read_sample_mask(nominal).any()
    mask = read_sample_mask(defective)
    assert mask.shape == (12, 20) and mask.sum() == 16


def test_mvtec_root_may_be_the_category_folder(make_mvtec):
    root = make_mvtec()
    by_category = load_mvtec(root, "widget")
    direct = load_mvtec(root / "widget")
    also = load_mvtec(root / "widget", "widget")
    assert by_category.split_hash() == direct.split_hash() == also.split_hash()
    assert direct.train_paths == by_category.train_paths


def test_mvtec_without_ground_truth_has_no_masks(make_mvtec):
    split = load_mvtec(make_mvtec(masks=False), "widget")
    assert split.has_masks is False
    assert all(s.mask_path is None for s in split.test)
    assert split.test_labels.sum() == 2  # image-level labels are still there


def test_mvtec_missing_mask_names_the_file(make_mvtec):
    root = make_mvtec(test={"good": 1, "scratch": 2})
    missing = root / "widget" / "ground_truth" / "scratch" / "001_mask.png"
    missing.unlink()
    with pytest.raises(InputError) as error:
        load_mvtec(root, "widget")
    assert str(error.value).startswith(str(missing))
    assert "missing ground-truth mask" in str(error.value)


def test_mvtec_unknown_category_lists_the_choices(make_mvtec):
    root = make_mvtec(category="widget")
    make_mvtec(category="gadget", root=root)
    assert mvtec_categories(root) == ["gadget", "widget"]
    with pytest.raises(InputError, match=r"unknown category 'bottle'.*gadget, widget"):
        load_mvtec(root, "bottle")
    with pytest.raises(InputError, match=r"several categories, choose one of: gadget, widget"):
        load_mvtec(root)


def test_mvtec_empty_or_missing_train_folder(make_mvtec):
    root = make_mvtec()
    train = root / "widget" / "train" / "good"
    shutil.rmtree(train)
    train.mkdir()
    (train / "notes.txt").write_text("not an image")
    with pytest.raises(InputError) as error:
        load_mvtec(root, "widget")
    assert str(error.value).startswith(str(train)) and "no images" in str(error.value)
    shutil.rmtree(train)
    with pytest.raises(InputError, match="no such folder"):
        load_mvtec(root, "widget")


def test_mvtec_missing_root_and_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_mvtec(tmp_path / "nowhere", "bottle")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an MVTec AD folder"):
        load_mvtec(tmp_path / "empty")


def test_image_extensions_case_insensitive_and_sorted(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.JpEg", "d.bmp", "e.tif", "f.TIFF", "g.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "h.png").mkdir()  # a folder with an image-like name is not an image
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.tif", "f.TIFF"]


# --- shots --------------------------------------------------------------------------------------
def test_with_shots_is_seeded_nested_and_keeps_the_test_set(make_mvtec):
    split = load_mvtec(make_mvtec(n_train=12), "widget")
    five = split.with_shots(5, seed=3)
    assert len(five.train) == 5 and five.test == split.test
    assert five.train_paths == split.with_shots(5, seed=3).train_paths  # deterministic
    assert set(five.train_paths) <= set(split.train_paths)
    assert five.train_paths == sorted(five.train_paths)  # the pool's order is kept
    # fewer shots with the same seed are a subset of more shots
    assert set(split.with_shots(2, seed=3).train_paths) <= set(five.train_paths)
    draws = {tuple(split.with_shots(5, seed=s).train_paths) for s in range(6)}
    assert len(draws) > 1
    assert split.with_shots(None).train_paths == split.train_paths
    assert len(split.train) == 12  # the original is untouched


def test_with_shots_rejects_bad_numbers(make_mvtec):
    split = load_mvtec(make_mvtec(n_train=3), "widget")
    with pytest.raises(InputError, match="asked for 4 training images but the training pool holds only 3"):
        split.with_shots(4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="positive integer"):
            split.with_shots(bad)


def test_split_rows_summary_and_repr(make_mvtec):
    split = load_mvtec(make_mvtec(), "widget")
    rows = split.to_rows()
    assert len(rows) == 8 and rows[0] == {
        "path": "train/good/000.png",
        "split": "train",
        "label": 0,
        "defect_type": "good",
        "group": "train/good/000",
    }
    assert split.summary()["defect_types"] == {"scratch": 2}
    assert repr(split) == "Split(name='mvtec/widget', train=4, test=2 nominal + 2 anomalous, has_masks=True)"
    assert split.split_hash() != split.with_shots(3).split_hash()


def test_training_pool_must_be_nominal(tmp_path):
    bad = Sample(tmp_path / "x.png", 1, "scratch", None, "x")
    with pytest.raises(ValueError, match="nominal images only"):
        Split("s", train=[bad], test=[], has_masks=False)


# --- folder datasets ----------------------------------------------------------------------------
def test_folder_dataset_split_is_seeded(make_folder_dataset):
    root = make_folder_dataset(nominal=10, defects={"dent": 2, "scratch": 3})
    split = load_folder(root, test_fraction=0.2, seed=0)
    assert split.name == "folder/mydata" and not split.has_masks
    assert len(split.train) == 8
    assert split.test_labels.tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert Counter(split.test_defect_types) == {"good": 2, "dent": 2, "scratch": 3}
    assert not set(split.train_paths) & set(split.test_paths)
    assert load_folder(root, seed=0).split_hash() == split.split_hash()
    assert len({load_folder(root, seed=s).split_hash() for s in range(5)}) > 1


def test_folder_dataset_with_masks(make_folder_dataset):
    root = make_folder_dataset(masks="masks")
    split = load_folder(root, masks="masks")
    assert split.has_masks
    assert "masks" not in split.test_defect_types
    for sample in split.test:
        assert (sample.mask_path is None) == (sample.label == 0)
    missing = root / "masks" / "dent" / "dent1.png"
    missing.unlink()
    with pytest.raises(InputError, match="missing ground-truth mask"):
        load_folder(root, masks="masks")


def test_folder_dataset_mask_named_with_suffix(make_folder_dataset):
    root = make_folder_dataset(defects={"dent": 1}, masks="gt")
    (root / "gt" / "dent" / "dent0.png").rename(root / "gt" / "dent" / "dent0_mask.png")
    split = load_folder(root, masks="gt")
    assert split.test[-1].mask_path.name == "dent0_mask.png"


def test_folder_dataset_with_given_train_and_test(tmp_path, png_writer, mask_writer):
    write_png, write_mask = png_writer, mask_writer
    root = tmp_path / "given"
    for i in range(3):
        write_png(root / "train" / "good" / f"t{i}.png")
    write_png(root / "test" / "good" / "n0.png")
    write_png(root / "test" / "crack" / "c0.png")
    write_mask(root / "masks" / "crack" / "c0_mask.png")
    split = load_folder(root, masks="masks")
    assert [p.name for p in split.train_paths] == ["t0.png", "t1.png", "t2.png"]
    assert [(s.path.name, s.label, s.defect_type) for s in split.test] == [
        ("n0.png", 0, "good"),
        ("c0.png", 1, "crack"),
    ]
    assert split.test[1].mask_path.name == "c0_mask.png"


def test_folder_dataset_errors(tmp_path, make_folder_dataset):
    with pytest.raises(InputError, match="no such folder"):
        load_folder(tmp_path / "absent")
    root = make_folder_dataset(defects={})
    with pytest.raises(InputError, match="no anomalous images found"):
        load_folder(root)
    with pytest.raises(InputError, match=r"nominal images \(nominal='ok'\)"):
        load_folder(root, nominal="ok")
    (root / "dent").mkdir()
    with pytest.raises(InputError, match="no images found"):
        load_folder(root)
    with pytest.raises(InputError, match="masks folder"):
        load_folder(root, masks="masks")
    with pytest.raises(InputError, match="test_fraction"):
        load_folder(root, test_fraction=1.0)
    (root / "train").mkdir()
    with pytest.raises(InputError, match="has train/ but no test/"):
        load_folder(root)


def test_load_dataset_dispatches_and_checks_arguments(make_mvtec, make_folder_dataset):
    root = make_mvtec()
    assert load_dataset(root, "MVTec", category="widget").name == "mvtec/widget"
    folder = make_folder_dataset()
    assert (
        load_dataset(folder, "folder", seed=1, test_fraction=0.3).split_hash()
        == load_folder(folder, seed=1, test_fraction=0.3).split_hash()
    )
    with pytest.raises(InputError, match="unknown dataset format; choose one of mvtec, mtd, folder"):
        load_dataset(root, "coco")
    with pytest.raises(InputError, match="only applies to format 'mvtec'"):
        load_dataset(folder, "folder", category="widget")


# --- MTD: tile groups on synthetic names ----------------------------------------------------------
def test_tile_groups_split_on_gaps_and_isolate_odd_names():
    stems = ["exp1_num_100", "exp2_num_150", "exp3_num_300", "exp1_num_501", "odd_name", "exp4_num_701"]
    groups = tile_groups(stems, "free")
    assert list(groups) == stems
    assert groups["exp1_num_100"] == groups["exp2_num_150"] == groups["exp3_num_300"] == "free/0000"
    assert groups["exp1_num_501"] == "free/0001"  # 201 after 300: a new tile
    assert groups["exp4_num_701"] == "free/0001"  # exactly 200 after 501: same tile
    assert groups["odd_name"] == "free/name-odd_name"


def test_mtd_layout_errors(tmp_path, png_writer, mask_writer):
    write_png, write_mask = png_writer, mask_writer
    with pytest.raises(InputError, match="no MT_Free folder"):
        load_mtd(tmp_path)
    write_png(tmp_path / "MT_Free" / "Imgs" / "exp1_num_1.jpg")
    write_png(tmp_path / "MT_Free" / "Imgs" / "exp1_num_900.jpg")
    with pytest.raises(InputError, match="no defect classes"):
        load_mtd(tmp_path)
    write_png(tmp_path / "MT_Crack" / "Imgs" / "exp1_num_5.jpg")
    with pytest.raises(InputError, match="missing ground-truth mask"):
        load_mtd(tmp_path)
    write_mask(tmp_path / "MT_Crack" / "Imgs" / "exp1_num_5.png")
    split = load_mtd(tmp_path)
    assert len(split.train) == 1 and split.test_defect_types == ["good", "crack"]


# --- MTD on the real data -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mtd_split(mtd_root):
    return load_mtd(mtd_root, test_fraction=0.2, seed=0)


@pytest.mark.mtd
def test_mtd_class_counts(mtd_split):
    everything = mtd_split.train + mtd_split.test
    assert len(everything) == 1344
    assert sum(s.label == 0 for s in everything) == 952
    assert Counter(s.defect_type for s in everything if s.label) == {
        "blowhole": 115,
        "break": 85,
        "crack": 57,
        "fray": 32,
        "uneven": 103,
    }
    assert all(s.label == 1 for s in everything if s.defect_type != "good")
    assert all(s.mask_path is not None and s.mask_path.suffix == ".png" for s in everything if s.label)
    assert len({s.path for s in everything}) == 1344


@pytest.mark.mtd
def test_mtd_split_is_leak_free_and_about_a_fifth(mtd_split):
    train_groups = {s.group for s in mtd_split.train}
    test_nominal_groups = {s.group for s in mtd_split.test if s.label == 0}
    assert not train_groups & test_nominal_groups
    assert len(train_groups | test_nominal_groups) == 150  # the tile rule on the released data
    assert len(test_nominal_groups) == 30
    nominal_in_test = sum(s.label == 0 for s in mtd_split.test)
    assert 0.15 < nominal_in_test / 952 < 0.25
    assert all(s.label == 1 for s in mtd_split.test[nominal_in_test:])  # all defects are in test


@pytest.mark.mtd
def test_mtd_groups_mostly_hold_distinct_exposures(mtd_split):
    nominal = [s for s in mtd_split.train + mtd_split.test if s.label == 0]
    by_group: dict[str, list[str]] = {}
    for s in nominal:
        by_group.setdefault(s.group, []).append(s.path.stem.split("_")[0])
    distinct = [len(set(v)) == len(v) for v in by_group.values()]
    assert np.mean(distinct) > 0.8
    assert Counter(len(v) for v in by_group.values()).most_common(1)[0][0] == 6


@pytest.mark.mtd
def test_mtd_split_is_seeded(mtd_root, mtd_split):
    again = load_dataset(mtd_root, "mtd", seed=0)
    assert again.split_hash() == mtd_split.split_hash()
    assert again.train_paths == mtd_split.train_paths
    other = load_mtd(mtd_root, seed=1)
    assert other.split_hash() != mtd_split.split_hash()
    assert not {s.group for s in other.train} & {s.group for s in other.test}


@pytest.mark.mtd
def test_mtd_masks_match_their_images(mtd_split):
    crack = next(s for s in mtd_split.test if s.defect_type == "crack")
    mask = read_sample_mask(crack)
    assert mask.dtype == bool and mask.any()
