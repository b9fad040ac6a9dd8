"""The ``patchcore-kit`` command line, run in-process through ``main([...])`` (plus one real process).

Bad input on the command line is tested in ``test_bad_input.py``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from patchcore_kit.cli import main
from patchcore_kit.patchcore import PatchCore

FAST = ["--image-size", "64", "--coreset-ratio", "0.25"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def mvtec(make_mvtec):
    """A 16x16 px MVTec-style category: 4 training images, test 2 good + 2 scratch + 1 dent."""
    return make_mvtec(n_train=4, test={"good": 2, "scratch": 2, "dent": 1})


def test_evaluate_writes_metrics_scores_and_split(mvtec, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evaluate", str(mvtec), "--format", "mvtec", "--output", str(out), *FAST]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_auroc"] == 1.0  # bright defects against grey nominal noise
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["aupro"] <= 1.0
    assert metrics["n_train"] == 4 and metrics["n_test"] == 5
    assert metrics["backbone"] == "efficientnet_lite0" and metrics["image_size"] == 64
    assert set(metrics["per_defect"]) == {"scratch", "dent"}
    seconds = metrics["seconds"]
    assert {"fit_features", "fit_coreset", "fit", "infer", "metrics", "total"} <= set(seconds)
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values())
    assert metrics["memory_bank"] == [round(4 * 64 * 0.25), 152]

    scores = read_csv(out / "scores.csv")
    assert list(scores[0]) == ["path", "label", "defect_type", "score"]
    assert len(scores) == 5
    for row in scores:
        assert (mvtec / "widget" / row["path"]).is_file()  # relative to the category folder
        assert row["path"].split("/")[1] == row["defect_type"]
        assert row["label"] == ("0" if row["defect_type"] == "good" else "1")
        float(row["score"])

    split = read_csv(out / "split.csv")
    assert list(split[0]) == ["path", "split", "label"]
    assert sum(r["split"] == "train" for r in split) == 4 and sum(r["split"] == "test" for r in split) == 5
    assert {r["path"] for r in split if r["split"] == "test"} == {r["path"] for r in scores}

    printed = capsys.readouterr().out
    assert "image AUROC 1.0000" in printed and "scratch" in printed and "metrics.json" in printed


def test_evaluate_without_masks_reports_null_pixel_metrics(make_mvtec, tmp_path, capsys):
    root = make_mvtec(n_train=3, test={"good": 1, "scratch": 2}, masks=False)
    out = tmp_path / "run"
    assert main(["evaluate", str(root), "--format", "mvtec", "--category", "widget", "--output", str(out), *FAST]) == 0
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text)
    assert metrics["pixel_auroc"] is None and metrics["aupro"] is None
    assert '"aupro": null' in text  # null in the file, not 0 or NaN
    assert metrics["per_defect"]["scratch"]["pixel_auroc"] is None
    assert "pixel AUROC n/a" in capsys.readouterr().out


def test_evaluate_with_shots_trains_on_a_seeded_subset(mvtec, tmp_path, capsys):
    from patchcore_kit.data import load_dataset

    out = tmp_path / "run"
    assert (
        main(["evaluate", str(mvtec), "--format", "mvtec", "--output", str(out), "--shots", "2", "--seed", "1", *FAST])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 2 and metrics["shots"] == 2 and metrics["n_test"] == 5
    expected = load_dataset(mvtec, "mvtec").with_shots(2, seed=1)
    train = [r["path"] for r in read_csv(out / "split.csv") if r["split"] == "train"]
    assert train == [expected.relative(p) for p in expected.train_paths]
    assert metrics["split_hash"] == expected.split_hash()
    assert metrics["memory_bank"][0] == round(2 * 64 * 0.25)


def test_fit_then_predict_round_trip(mvtec, tmp_path, capsys):
    category = mvtec / "widget"
    model_path = tmp_path / "models" / "widget.safetensors"
    assert main(["fit", str(category / "train" / "good"), "--output", str(model_path), *FAST]) == 0
    assert "memory bank (64, 152)" in capsys.readouterr().out

    test_images = [category / "test" / "good", category / "test" / "scratch", category / "test" / "dent" / "000.png"]
    scores_path = tmp_path / "scores.csv"
    assert main(["predict", str(model_path), *map(str, test_images), "--output", str(scores_path)]) == 0
    rows = read_csv(scores_path)
    assert [Path(r["path"]).parent.name for r in rows] == ["good", "good", "scratch", "scratch", "dent"]

    model = PatchCore.load(model_path)
    assert model.threshold_ is not None  # fit calibrates from its own nominal images
    expected = model.decision_function([Path(r["path"]) for r in rows])
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-6)
    assert [int(r["anomalous"]) for r in rows] == (expected > model.threshold_).astype(int).tolist()
    assert all(r["anomalous"] == "1" for r in rows[2:])  # the bright defects clear the nominal threshold

    # Predicting again may replace the scores file it wrote itself; without --output it prints.
    assert main(["predict", str(model_path), str(test_images[2]), "--output", str(scores_path)]) == 0
    assert len(read_csv(scores_path)) == 1
    capsys.readouterr()
    assert main(["predict", str(model_path), str(test_images[2])]) == 0
    score, flag, path = capsys.readouterr().out.strip().split("\t")
    assert path == str(test_images[2]) and flag == "1" and float(score) == pytest.approx(expected[-1], rel=1e-4)


def test_patch_size_reaches_the_model(mvtec, tmp_path, capsys):
    model_path = tmp_path / "p1.safetensors"
    train = str(mvtec / "widget" / "train" / "good")
    assert main(["fit", train, "--output", str(model_path), *FAST, "--patch-size", "1"]) == 0
    model = PatchCore.load(model_path)
    assert model.patch_size == 1
    default = PatchCore(image_size=64, coreset_ratio=0.25, patch_size=3).fit(
        list((mvtec / "widget" / "train" / "good").iterdir())
    )
    # without aggregation the bank holds the raw stage features: different entries than with p=3
    assert not np.allclose(model.memory_bank_, default.memory_bank_)


def test_refitting_replaces_a_model_it_wrote(mvtec, tmp_path, capsys):
    model_path = tmp_path / "m.safetensors"
    train = str(mvtec / "widget" / "train" / "good")
    assert main(["fit", train, "--output", str(model_path), *FAST, "--seed", "0"]) == 0
    assert main(["fit", train, "--output", str(model_path), *FAST, "--coreset-ratio", "10"]) == 0
    assert PatchCore.load(model_path).memory_bank_.shape[0] == 10


def test_console_script_runs_in_its_own_process(mvtec, tmp_path):
    """The installed ``patchcore-kit`` entry point (pyproject [project.scripts]) really works."""
    script = Path(sys.executable).parent / "patchcore-kit"
    assert script.is_file(), "install the package (pip install -e .) to get the console script"
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(script), "evaluate", str(mvtec), "--format", "mvtec", "--output", str(out), *FAST],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "image AUROC" in result.stdout and "Traceback" not in result.stderr
    assert json.loads((out / "metrics.json").read_text())["n_test"] == 5


@pytest.mark.mtd
def test_evaluate_on_mtd(mtd_root, tmp_path, capsys):
    from patchcore_kit.data import load_dataset

    out = tmp_path / "mtd"
    code = main(
        [
            "evaluate",
            str(mtd_root),
            "--format",
            "mtd",
            "--shots",
            "5",
            "--coreset-ratio",
            "0.1",
            "--image-size",
            "96",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 5 and metrics["dataset"] == "mtd"
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert metrics["image_auroc"] > 0.5  # better than chance even from 5 tiny images
    assert set(metrics["per_defect"]) == {"blowhole", "break", "crack", "fray", "uneven"}
    for values in metrics["per_defect"].values():
        assert values["n_images"] > 0 and 0.0 <= values["image_auroc"] <= 1.0

    # No tile (group) on both sides: the written split, checked against the loader's tile groups.
    groups = {s.path.relative_to(mtd_root).as_posix(): s.group for s in load_dataset(mtd_root, "mtd", seed=0).test}
    groups.update(
        {s.path.relative_to(mtd_root).as_posix(): s.group for s in load_dataset(mtd_root, "mtd", seed=0).train}
    )
    rows = read_csv(out / "split.csv")
    assert len(rows) == 5 + metrics["n_test"]
    train_groups = {groups[r["path"]] for r in rows if r["split"] == "train"}
    test_groups = {groups[r["path"]] for r in rows if r["split"] == "test"}
    assert train_groups and test_groups and not train_groups & test_groups
    assert len(read_csv(out / "scores.csv")) == metrics["n_test"]
