"""patchcore-kit tune: grouped folds, validation anomalies, grids, the loop, settings.json round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchcore_kit import InputError, PatchCore, load_settings, tune
from patchcore_kit.cli import main
from patchcore_kit.data import load_dataset
from patchcore_kit.data.base import Sample, Split
from patchcore_kit.data.demo import DEFECT_TYPES
from patchcore_kit.features import FeatureExtractor
from patchcore_kit.tuning import grouped_folds, load_grid, regroup, synthetic_anomalies
from patchcore_kit.tuning.folds import check_shots, development_split
from patchcore_kit.tuning.grid import keep_aspect_size, model_params
from patchcore_kit.tuning.validation import real_anomalies

#: A grid small enough for tests: one stage, tiny images, two patch sizes.
TINY = {"layers": [["layer3"]], "patch_size": [1, 3], "image_size": [64], "fixed": {"coreset_ratio": 0.5}}


def _tiled_split(n_groups: int = 9, per_group: int = 3) -> Split:
    """A pool of MTD-like objects photographed several times, plus a test set (no files needed)."""
    pool = [
        Sample(Path(f"pool/t{g}_{i}.png"), 0, "good", None, f"t{g}") for g in range(n_groups) for i in range(per_group)
    ]
    test = [Sample(Path(f"test/n{g}.png"), 0, "good", None, f"n{g}") for g in range(3)]
    test += [Sample(Path(f"test/{d}{g}.png"), 1, d, None, f"{d}{g}") for d in ("crack", "hole") for g in range(4)]
    return Split("tiles", pool, test, has_masks=False)


def test_folds_keep_groups_whole_cover_the_pool_and_never_touch_test_nominals():
    split = _tiled_split()
    folds = grouped_folds(split.train, k=3, seed=0)
    groups = [{s.group for s in fold} for fold in folds]
    assert all(len(g) == 3 for g in groups)  # 9 objects dealt into 3 folds
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sorted(s.path for fold in folds for s in fold) == sorted(s.path for s in split.train)
    assert all(len(fold) == 9 for fold in folds)  # every shot of an object sits with its object
    test_nominals = {s.path for s in split.test if s.label == 0}
    used, held = real_anomalies(split, seed=0, where="tiles")
    for index in range(3):
        dev = development_split(split, folds, index, used, shots=4, seed=0)
        assert len(dev.train) == 4
        assert not {s.group for s in dev.train} & {s.group for s in folds[index]}
        assert not {s.path for s in dev.train + dev.test} & test_nominals
        assert {s.path for s in dev.test if s.label} == {s.path for s in used}
    # seeded: the same seed cuts the same folds, another seed others
    assert [[s.path for s in f] for f in grouped_folds(split.train, 3, 0)] == [[s.path for s in f] for f in folds]
    assert [[s.path for s in f] for f in grouped_folds(split.train, 3, 1)] != [[s.path for s in f] for f in folds]
    # the defective images are halved per type by object: both halves have every type, nothing shared
    assert {s.defect_type for s in used} == {s.defect_type for s in held} == {"crack", "hole"}
    assert not {s.path for s in used} & {s.path for s in held}


def test_too_few_groups_or_images_for_the_folds_is_one_clear_message():
    split = _tiled_split(n_groups=4)
    with pytest.raises(InputError, match=r"4 groups \(objects\) in the training pool, too few for 5 folds"):
        grouped_folds(split.train, k=5, seed=0, where="tiles")
    folds = grouped_folds(split.train, k=4, seed=0)
    with pytest.raises(InputError, match="too few nominal images for 4 folds with --shots 10"):
        check_shots(split, folds, 10, "tiles")
    with pytest.raises(InputError, match="at least 2"):
        grouped_folds(split.train, k=1)


def test_groups_regex_names_objects_in_folder_data(make_folder_dataset, tmp_path):
    root = make_folder_dataset(nominal=0, defects={"dent": 1})
    (root / "good").mkdir()
    for part in range(4):
        for shot in range(2):
            Image.new("RGB", (8, 8)).save(root / "good" / f"part{part}_shot{shot}.png")
    split = load_dataset(root, "folder", test_fraction=0.25)
    grouped = regroup(split.train, r"^(part\d+)_", str(root))
    assert {s.group for s in grouped} <= {f"part{i}" for i in range(4)}
    for fold in grouped_folds(grouped, k=2, seed=0):
        for s in fold:  # both shots of an object are in the same fold when both are in the pool
            twins = [t for t in grouped if t.group == s.group]
            assert all(t in fold for t in twins)
    with pytest.raises(InputError, match="does not match --groups"):
        regroup(split.train, r"^widget", str(root))
    with pytest.raises(InputError, match="not a regular expression"):
        regroup(split.train, r"(", str(root))


def test_synthetic_anomalies_are_seeded_and_their_masks_match_their_pastes(make_mvtec, tmp_path):
    root = make_mvtec(n_train=12, size=(64, 48))
    split = load_dataset(root, "mvtec", "widget")
    first = synthetic_anomalies(split, tmp_path / "a", seed=3, progress=False)
    again = synthetic_anomalies(split, tmp_path / "b", seed=3, progress=False)
    other = synthetic_anomalies(split, tmp_path / "c", seed=4, progress=False)
    assert len(first) == len(split.train)
    assert [s.defect_type for s in first].count("scratch") == 2  # the six painters dealt out evenly
    assert {s.defect_type for s in first} == set(DEFECT_TYPES)
    assert [p.path.read_bytes() for p in first] == [p.path.read_bytes() for p in again]
    assert [p.path.read_bytes() for p in first] != [p.path.read_bytes() for p in other]
    sources = {s.group: s for s in split.train}
    for painted in first:
        assert painted.label == 1 and painted.group in sources  # in its source's fold
        original = np.asarray(Image.open(sources[painted.group].path).convert("RGB")).astype(int)
        defected = np.asarray(Image.open(painted.path).convert("RGB")).astype(int)
        mask = np.asarray(Image.open(painted.mask_path)) > 127
        changed = (original != defected).any(axis=2)
        assert defected.shape == original.shape and mask.shape == original.shape[:2]
        assert mask.any() and not (changed & ~mask).any()  # nothing changed outside the mask
        assert changed.sum() >= 0.5 * mask.sum(), painted.defect_type  # and the mask is what changed
    with pytest.raises(InputError, match="another pool or seed"):
        synthetic_anomalies(split, tmp_path / "a", seed=5, progress=False)


def test_grid_checks_name_the_problem(tmp_path):
    candidates, fixed = load_grid(None)
    assert len(candidates) == 4 * 3 * 2 and fixed["coreset_ratio"] == 0.1
    assert {c["layers"] for c in candidates} == {
        ("layer2", "layer3"),
        ("layer3",),
        ("layer3", "layer4"),
        ("layer2", "layer3", "layer4"),
    }
    bad = tmp_path / "grid.yaml"
    for text, message in [
        ("layers: [[layer3, layer5]]\n", "unknown stage 'layer5'"),
        ("patch_size: [0]\n", "patch_size must be an odd whole number of at least 1"),
        ("patch_size: [2]\n", "patch_size must be an odd"),
        ("stages: [[layer3]]\n", "unknown grid key 'stages'"),
        ("aspect: [crop]\n", "aspect must be one of"),
        ("layers: [[layer3]]\nfixed: {coreset_ratio: 2.5}\n", "coreset_ratio"),
        ("layers: [\n", "not a readable grid file"),
    ]:
        bad.write_text(text)
        with pytest.raises(InputError, match=message) as error:
            load_grid(bad)
        assert str(error.value).startswith(str(bad))
    good = tmp_path / "grid.json"
    good.write_text(
        json.dumps(
            {
                "layers": [["layer4", "layer3"]],
                "patch_size": [1, 1],
                "candidates": [{"layers": ["layer2"], "image_size": 96}],
            }
        )
    )
    candidates, _ = load_grid(good)
    assert [c["layers"] for c in candidates] == [("layer3", "layer4"), ("layer2",)]  # duplicates dropped, order kept


def test_keep_aspect_resolves_to_the_pools_shape():
    assert keep_aspect_size(224, [1.0, 1.0]) == (224, 224)
    assert keep_aspect_size(224, [1.25, 1.25, 2.0]) == (224, 288)  # wide: median 1.25, width 280 to the stride
    assert keep_aspect_size(224, [0.5]) == (448, 224)  # tall
    candidate = load_grid({"layers": [["layer3"]], "aspect": ["keep"]})[0][0]
    assert model_params(candidate, {}, [2.0])["image_size"] == (224, 448)
    assert model_params(candidate, {}, [1.0])["image_size"] == 224


def _read_csv(path: Path) -> list[dict]:
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_tune_scores_every_candidate_writes_settings_and_resumes(make_mvtec, tmp_path, monkeypatch, one_thread):
    root = make_mvtec(n_train=9, test={"good": 3, "scratch": 4, "dent": 4}, size=(48, 48))
    split = load_dataset(root, "mvtec", "widget")
    test_nominals = {str(s.path) for s in split.test if s.label == 0}
    seen = []
    original = FeatureExtractor.iter_layer_maps

    def spy(self, images, desc="features"):
        seen.extend(str(i) for i in images)
        return original(self, images, desc)

    monkeypatch.setattr(FeatureExtractor, "iter_layer_maps", spy)
    out = tmp_path / "tune"
    settings = tune(root, "mvtec", "widget", output=out, grid=TINY, folds=3, validation="real", progress=False)
    assert seen and not set(seen) & test_nominals  # the test split's nominal images are never read
    rows = _read_csv(out / "candidates.csv")
    assert [r["setting"] for r in rows] == sorted(
        [r["setting"] for r in rows], key=lambda n: -float(next(x["image_auroc"] for x in rows if x["setting"] == n))
    )  # best first
    assert {r["setting"] for r in rows} == {"layer3, 64 px, p=1", "layer3, 64 px, p=3"}
    for row in rows:
        folds = [float(row[f"fold{k}"]) for k in range(3)]
        assert abs(float(row["image_auroc"]) - np.mean(folds)) < 1e-3
        assert abs(float(row["image_auroc_sd"]) - np.std(folds)) < 1e-3
        assert row["image_auroc_scratch"] and row["image_auroc_dent"] and float(row["seconds"]) >= 0
    assert len(_read_csv(out / "folds.csv")) == 6
    assert settings["setting"] == rows[0]["setting"]
    assert settings == json.loads((out / "settings.json").read_text())
    used = settings["defective_used"]
    assert len(used) == 4 and settings["defective_held_out"] == 4  # half of each type, recorded
    assert all(p.startswith("test/") and "good" not in p for p in used)

    # the same call again resumes: nothing is fitted twice
    monkeypatch.setattr("patchcore_kit.tuning.run.score_fold", lambda *a, **k: pytest.fail("refitted a done fold"))
    assert tune(root, "mvtec", "widget", output=out, grid=TINY, folds=3, validation="real", progress=False) == settings
    with pytest.raises(InputError, match="another protocol"):
        tune(root, "mvtec", "widget", output=out, grid=TINY, folds=3, seed=1, validation="real", progress=False)

    # settings.json round-trips into the estimator ...
    params = load_settings(out / "settings.json")
    model = PatchCore(**params)
    for key, value in params.items():
        assert getattr(model, key) == value
    assert model.layers == ("layer3",) and model.image_size == 64 and model.coreset_ratio == 0.5

    # ... and into evaluate (explicit options win), which reports the figure on what the tune never saw
    report = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(root),
                "--format",
                "mvtec",
                "--settings",
                str(out / "settings.json"),
                "--shots",
                "6",
                "--output",
                str(report),
            ]
        )
        == 0
    )
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["layers"] == ["layer3"] and metrics["image_size"] == 64
    assert metrics["patch_size"] == params["patch_size"] and metrics["coreset_ratio"] == 0.5
    assert metrics["held_out"]["n_nominal"] == 3 and metrics["held_out"]["n_defective"] == 4
    assert (
        main(
            [
                "evaluate",
                str(root),
                "--format",
                "mvtec",
                "--settings",
                str(out / "settings.json"),
                "--patch-size",
                "5",
                "--output",
                str(report),
            ]
        )
        == 0
    )
    assert json.loads((report / "metrics.json").read_text())["patch_size"] == 5


def test_synthetic_tune_needs_no_defective_image_and_fit_takes_its_settings(make_mvtec, tmp_path, one_thread, capsys):
    root = make_mvtec(n_train=9, test={"good": 2}, size=(48, 48))  # no defective image at all
    with pytest.raises(InputError, match="no defective images.*--validation synthetic"):
        tune(root, "mvtec", "widget", output=tmp_path / "real", grid=TINY, folds=3, validation="real", progress=False)
    assert (
        main(
            [
                "tune",
                str(root),
                "--format",
                "mvtec",
                "--validation",
                "synthetic",
                "--folds",
                "3",
                "--jobs",
                "2",
                "--grid",
                _grid_file(tmp_path),
                "--output",
                str(tmp_path / "syn"),
            ]
        )
        == 0
    )
    settings = json.loads((tmp_path / "syn" / "settings.json").read_text())
    assert settings["defective_used"] == [] and settings["protocol"]["validation"] == "synthetic"
    rows = _read_csv(tmp_path / "syn" / "candidates.csv")
    assert {
        k.removeprefix("image_auroc_") for k in rows[0] if k.startswith("image_auroc_") and k != "image_auroc_sd"
    } <= set(DEFECT_TYPES)
    model_file = tmp_path / "model.safetensors"
    assert (
        main(
            [
                "fit",
                str(root / "widget" / "train" / "good"),
                "--settings",
                str(tmp_path / "syn" / "settings.json"),
                "--output",
                str(model_file),
            ]
        )
        == 0
    )
    loaded = PatchCore.load(model_file)
    assert loaded.layers == ("layer3",) and loaded.patch_size == settings["params"]["patch_size"]


def _grid_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text("layers: [[layer3]]\npatch_size: [1, 3]\nimage_size: [64]\nfixed: {coreset_ratio: 0.5}\n")
    return str(path)


def test_cli_tune_bad_input_is_one_line(make_mvtec, tmp_path, capsys):
    root = make_mvtec(n_train=4)
    grid = tmp_path / "g.yaml"
    grid.write_text("layers: [[layer9]]\n")
    assert main(["tune", str(root), "--format", "mvtec", "--grid", str(grid), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown stage 'layer9'" in err
    assert main(["tune", str(root), "--format", "mvtec", "--output", str(tmp_path / "o")]) == 2
    assert "4 nominal training images in the training pool, too few for 5 folds" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                str(root),
                "--format",
                "mvtec",
                "--settings",
                str(tmp_path / "none.json"),
                "--output",
                str(tmp_path / "e"),
            ]
        )
        == 2
    )
    assert "no such settings file" in capsys.readouterr().err
