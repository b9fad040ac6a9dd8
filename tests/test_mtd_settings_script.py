"""scripts/mtd_settings.py chooses MTD settings on a development split: it must never touch the test set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from patchcore_kit.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mtd_settings.py"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script():
    return _load(SCRIPT)


def test_development_folds_share_nothing_with_the_reported_test_set(mtd_root):
    script = _script()
    split = load_dataset(mtd_root, "mtd", seed=script.SEED)
    test_nominal = {s.path for s in split.test if s.label == 0}
    fold_nominals = []
    for fold in range(script.N_FOLDS):
        dev, held_out = script.development_split(split, fold)
        dev_nominal = [s for s in dev.test if s.label == 0]
        dev_defects = [s for s in dev.test if s.label == 1]
        # nominal development images come from the training pool, never from the test set
        assert dev_nominal and not {s.path for s in dev_nominal} & test_nominal
        assert {s.path for s in dev.train + dev_nominal} == {s.path for s in split.train}
        # no tile straddles development training and development test
        assert not {s.group for s in dev.train} & {s.group for s in dev_nominal}
        # the defective images are halved by tile, per class; the halves are disjoint and complete
        assert not {s.group for s in dev_defects} & {s.group for s in held_out}
        assert sorted(s.path for s in dev_defects + held_out) == sorted(s.path for s in split.test if s.label)
        for defect in {s.defect_type for s in held_out}:
            assert any(s.defect_type == defect for s in dev_defects)
        fold_nominals.append({s.path for s in dev_nominal})
        # seeded: the same call gives the same split, and the same defective half in every fold
        again, again_held = script.development_split(split, fold)
        assert again.split_hash() == dev.split_hash()
        assert again_held == held_out == script.development_split(split, 0)[1]
    # the folds partition the training pool: every pool image is development nominal exactly once
    assert sum(len(f) for f in fold_nominals) == len(split.train)
    assert set().union(*fold_nominals) == {s.path for s in split.train}


def test_every_candidate_is_a_valid_patchcore_setting():
    from patchcore_kit import PatchCore

    script = _script()
    for name, params in script.CANDIDATES.items():
        model = PatchCore(**params)
        assert model.get_params()["layers"] == params["layers"], name


def test_development_scores_average_the_folds(mtd_root, tmp_path, monkeypatch):
    """A small real run: five folds scored, their mean reported, one figure per defect class."""
    script = _script()
    monkeypatch.setattr(script, "SHOTS", 4)
    split = load_dataset(mtd_root, "mtd", seed=script.SEED)
    params = dict(layers=("layer3",), image_size=64, patch_size=1)
    row = script.development_scores(params, split, cache=str(tmp_path / "cache"))
    folds = [row[f"fold{k}"] for k in range(script.N_FOLDS)]
    assert all(0.0 <= auc <= 1.0 for auc in folds)
    assert abs(row["image_auroc"] - sum(folds) / len(folds)) < 1e-3
    assert len(set(folds)) > 1  # the folds test different tiles
    classes = {key for key in row if key.startswith("image_auroc_")}
    assert classes == {f"image_auroc_{d}" for d in ("blowhole", "break", "crack", "fray", "uneven")}


def _probe():
    return _load(SCRIPT.with_name("mtd_aspect_probe.py"))


def test_aspect_probe_sizes_keep_or_stretch_the_aspect_ratio():
    probe = _probe()
    assert probe.target_size(300, 200, "square", 224) == (224, 224)
    assert probe.target_size(300, 200, "scale", 0.5) == (100, 150)
    assert probe.target_size(300, 200, "height", 100) == (100, 150)
    h, w = probe.target_size(300, 200, "area", 224)
    assert abs(h * w - 224 * 224) < 500 and abs(w / h - 1.5) < 0.02
    assert probe.target_size(40, 300, "scale", 0.5) == (150, 32)  # never below one stride-32 cell
    with pytest.raises(ValueError, match="unknown mode"):
        probe.target_size(300, 200, "crop", 1)


def test_aspect_probe_features_follow_the_image_shape(tmp_path, png_writer):
    from patchcore_kit.backbones import load_backbone

    probe = _probe()
    image = png_writer(tmp_path / "wide.png", size=(256, 128))  # width 256, height 128
    features = probe.patch_features(load_backbone("efficientnet_lite0"), image, "scale", 1.0)
    assert features.shape == (8 * 16, 112 + 320)  # layer3's stride-16 grid, layer3 + layer4 channels
