"""The notebooks' data helper: demo data unless a folder is given, one split per category, a seeded draw."""

from __future__ import annotations

import json

import pytest

from patchcore_kit import InputError
from patchcore_kit.data import load_dataset
from patchcore_kit.data.demo import MANIFEST_NAME
from patchcore_kit.lessons import FAST_DEMO, notebook_dataset, notebook_datasets

FAST_FOLDER = "demo_128px_10-4-2"  # the FAST demo's own folder, named after its size (paths.demo_data_dir)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty data folder (``$PATCHCORE_KIT_DATA``), so the demo data is built in ``tmp_path``."""
    monkeypatch.setenv("PATCHCORE_KIT_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_without_a_folder_the_fast_demo_data_is_built_and_loaded(data_dir):
    split = notebook_dataset(None, "mvtec", "gravel", fast=True, n_train=4)
    root = data_dir / FAST_FOLDER
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["categories"] == ["gravel"]
    assert manifest["parameters"]["image_size"] == FAST_DEMO["image_size"]
    assert split.name == "mvtec/gravel" and split.root == root / "gravel"
    # the same seeded draw as cutting the full pool by hand
    pool = load_dataset(root, "mvtec", "gravel")
    assert len(pool.train) == FAST_DEMO["n_train"]
    assert split.train == pool.with_shots(4, seed=0).train and split.test == pool.test
    assert not (data_dir / "demo").exists()  # FAST never touches the full-size demo data


def test_more_training_images_than_the_pool_keeps_the_pool(data_dir):
    split = notebook_dataset(category="gravel", fast=True, n_train=1000)
    assert len(split.train) == FAST_DEMO["n_train"]
    assert len(notebook_dataset(category="gravel", fast=True).train) == FAST_DEMO["n_train"]  # n_train=None


def test_several_categories_are_built_at_once_and_named_for_display(data_dir):
    datasets = notebook_datasets(None, "mvtec", "gravel, grass", fast=True)
    assert list(datasets) == ["demo / gravel", "demo / grass"]
    assert [split.name for split in datasets.values()] == ["mvtec/gravel", "mvtec/grass"]
    manifest = json.loads((data_dir / FAST_FOLDER / MANIFEST_NAME).read_text())
    assert sorted(manifest["categories"]) == ["grass", "gravel"]


def test_a_given_mvtec_folder_is_loaded_as_it_is(data_dir, make_mvtec):
    root = make_mvtec(category="widget", n_train=6, test={"good": 2, "scratch": 3})
    split = notebook_dataset(root, "MVTec", "widget", n_train=2, seed=1)
    assert split.name == "mvtec/widget" and len(split.test) == 5
    assert split.train == load_dataset(root, "mvtec", "widget").with_shots(2, seed=1).train
    assert list(notebook_datasets(root, "mvtec", ["widget"])) == ["mvtec / widget"]
    assert not data_dir.exists()  # no demo data built


def test_other_formats_ignore_the_category(data_dir, make_folder_dataset):
    root = make_folder_dataset(nominal=10)
    split = notebook_dataset(root, "folder", "brick", n_train=3)  # "brick": the notebooks' default, unused
    expected = load_dataset(root, "folder", seed=0)
    assert split.test == expected.test and split.train == expected.with_shots(3, seed=0).train
    assert list(notebook_datasets(root, "folder", "a,b")) == [expected.name]


def test_bad_settings_are_named(data_dir):
    with pytest.raises(InputError, match="dataset folder"):
        notebook_dataset(None, "mtd")  # the demo data is MVTec-style
    with pytest.raises(InputError, match="one category"):
        notebook_dataset(None, "mvtec", "brick,gravel", fast=True)
    with pytest.raises(InputError, match="at least one category"):
        notebook_datasets(None, "mvtec", " , ", fast=True)
    with pytest.raises(InputError, match="unknown demo categories"):
        notebook_dataset(None, "mvtec", "widget", fast=True)
    assert not (data_dir / FAST_FOLDER).exists()


def test_development_split_halves_every_defect_type_and_keeps_the_training_pool(tmp_path, monkeypatch):
    from patchcore_kit.data import load_dataset
    from patchcore_kit.lessons import demo_image_folder, development_split

    monkeypatch.setenv("PATCHCORE_KIT_DATA", str(tmp_path))
    folder = demo_image_folder("brick", fast=True, n_defective=2)
    assert (folder / "good").is_dir() and len([d for d in folder.iterdir() if d.is_dir()]) > 2
    assert demo_image_folder("brick", fast=True, n_defective=2) == folder  # made once
    split = load_dataset(folder, "folder", seed=0)
    development, test = development_split(split, 0.5, seed=0)
    assert development.train == split.train == test.train
    assert sorted(map(str, development.test_paths + test.test_paths)) == sorted(map(str, split.test_paths))
    assert not set(development.test_paths) & set(test.test_paths)
    kinds = {s.defect_type for s in split.test if s.label == 1}
    assert {s.defect_type for s in development.test if s.label == 1} == kinds  # every type in both halves
    assert {s.defect_type for s in test.test if s.label == 1} == kinds


def test_expect_stops_on_the_demo_and_warns_on_your_own_data():
    from patchcore_kit.lessons import expect

    assert expect(True, "fine")
    with pytest.raises(AssertionError, match="odd"):
        expect(False, "odd", strict=True)
    with pytest.warns(UserWarning, match="odd"):
        assert expect(False, "odd", strict=False) is False
