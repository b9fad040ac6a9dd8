"""The demo report end to end (FAST mode: tiny data, seconds) and its small helpers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import base64
import contextlib
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from patchcore_kit import report
from patchcore_kit.errors import InputError


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    """One FAST demo run; the data goes to a temporary PATCHCORE_KIT_DATA, never the repo's data/."""
    base = tmp_path_factory.mktemp("demo_report")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("PATCHCORE_KIT_DATA", str(base / "data"))
        page = report.run_demo(base / "out", fast=True, progress=False)
    return {"base": base, "output": base / "out", "page": page, "printed": printed.getvalue()}


def test_demo_writes_the_report_files_and_builds_data_where_configured(fast_demo):
    output = fast_demo["output"]
    assert fast_demo["page"] == output / "report.html"
    for name in ("report.html", "metrics.json", "metrics.csv"):
        assert (output / name).is_file(), name
    # the FAST report's data in a folder of its own size, apart from the FAST notebooks' (128 px)
    assert (fast_demo["base"] / "data" / "demo_64px_6-3-1" / "demo_manifest.json").is_file()
    figures = {p.name for p in (output / "figures").glob("*.png")}
    assert {"metrics_table.png", "sample_efficiency.png", "scores_brick.png", "gallery_tissue_good.png"} <= figures
    assert len(figures) == 2 + 2 * (1 + 7)  # table, curve; per category a histogram and 7 galleries


def test_report_html_is_self_contained(fast_demo):
    page = fast_demo["page"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
    assert "<link" not in page and "<script" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    figures = list((fast_demo["output"] / "figures").glob("*.png"))
    assert len(sources) == len(figures) - 1  # every figure once, except the table: the page has it as HTML
    for source in sources:
        kind, payload = source.split(",", 1)
        assert kind in ("data:image/png;base64", "data:image/jpeg;base64")
        magic = b"\x89PNG\r\n\x1a\n" if "png" in kind else b"\xff\xd8\xff"
        assert base64.b64decode(payload).startswith(magic)
    for category in report.FAST.categories:
        assert f"id='{category}'" in page
    assert "FAST mode" in page  # nobody mistakes the tiny run's numbers for results


def test_metrics_json_has_every_category_with_finite_values(fast_demo):
    document = json.loads((fast_demo["output"] / "metrics.json").read_text())
    categories = document["categories"]
    assert list(categories) == list(report.FAST.categories)
    for name, metrics in categories.items():
        for key in ("image_auroc", "pixel_auroc", "aupro", "caught", "false_alarms"):
            assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (name, key)
        for key in ("fit_s", "infer_s", "threshold", "pixel_threshold"):
            assert math.isfinite(metrics[key]), (name, key)
        assert metrics["n_train"] == report.FAST.n_train
        assert metrics["n_test"] == report.FAST.n_test_good + 6 * report.FAST.n_test_per_defect
        assert len(metrics["per_defect"]) == 6
    assert document["settings"]["coreset_ratio"] == report.DEMO_MODEL["coreset_ratio"]
    curve = pd.DataFrame(document["sample_efficiency"])
    for category in report.FAST.categories:
        assert sorted(curve[curve.category == category].shots) == [*report.FAST.shots, report.FAST.n_train]
    assert curve.image_auroc.notna().all()


def test_metrics_csv_matches_the_json(fast_demo):
    table = pd.read_csv(fast_demo["output"] / "metrics.csv", index_col="category")
    document = json.loads((fast_demo["output"] / "metrics.json").read_text())
    assert list(table.index) == list(report.FAST.categories)
    for category in table.index:  # the CSV keeps 6 significant digits (float_format %.6g)
        assert table.loc[category, "image_auroc"] == pytest.approx(
            document["categories"][category]["image_auroc"], rel=1e-5
        )


def test_terminal_output_has_the_table_and_the_report_path(fast_demo):
    printed = fast_demo["printed"]
    for category in report.FAST.categories:
        assert re.search(rf"^{category}\s+\d\.\d{{3}}", printed, flags=re.MULTILINE), printed
    assert str(fast_demo["page"].resolve()) in printed


def test_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("someone's file")
    with pytest.raises(InputError, match=rf"^{re.escape(str(target))}: exists and is not a folder"):
        report.run_demo(target, fast=True, progress=False)
    assert target.read_text() == "someone's file"


def test_gallery_samples_takes_the_first_of_each_type_nominal_last():
    class Sample:
        def __init__(self, defect_type):
            self.defect_type = defect_type

    class Split:
        test = [Sample(t) for t in ["good", "good", "stain", "hole", "stain", "stain", "good"]]

    class Evaluation:
        split = Split()

    assert report.gallery_samples(Evaluation(), 2) == {"hole": [3], "stain": [2, 4], "good": [0, 1]}


def test_data_uri_embeds_png_as_is_or_as_jpeg(tmp_path):
    path = tmp_path / "x.png"
    pixels = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    uri = report.data_uri(path)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == path.read_bytes()
    jpeg = report.data_uri(path, jpeg_quality=80)
    assert jpeg.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1]))) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (48, 32)


def test_format_table_prints_missing_values_as_a_dash():
    table = pd.DataFrame(
        {
            "image_auroc": [0.91234],
            "pixel_auroc": [None],
            "aupro": [0.5],
            "n_train": [40],
            "n_test": [34],
            "fit_s": [12.345],
            "infer_s": [1.0],
        },
        index=pd.Index(["brick"], name="category"),
    )
    text = report.format_table(table)
    assert "0.912" in text and "12.3" in text and " -" in text


def test_model_report_shows_settings_thresholds_and_the_test_gallery(tmp_path, tiny_gravel_split):
    from patchcore_kit.evaluate import evaluate
    from patchcore_kit.patchcore import PatchCore

    split = tiny_gravel_split
    model = PatchCore(image_size=64, coreset_ratio=0.5, feature_cache=str(tmp_path / "cache"))
    evaluation = evaluate(model, split)
    settings = pd.DataFrame({"patch size": [1, 3], "development image AUROC": [0.7, 0.8]})
    page = report.write_model_report(
        tmp_path / "out", model, evaluation, settings, title="my parts", notes=["chosen on development data"]
    )
    text = page.read_text()
    assert page == tmp_path / "out" / "report.html"
    assert "my parts" in text and "development image AUROC" in text and "pixel threshold" in text
    assert text.count("<img") == 2 and (tmp_path / "out" / "figures" / "gallery.png").is_file()
    nominal_only = report.write_model_report(tmp_path / "nominal", model)  # no test set: scores only
    assert nominal_only.read_text().count("<img") == 1


def test_each_demo_size_has_its_own_data_folder(tmp_path, monkeypatch):
    # Two callers sharing a folder would rebuild each other's data on every run (issue 13).
    import inspect

    from patchcore_kit.data.demo import build_demo_dataset
    from patchcore_kit.lessons import FAST_DEMO
    from patchcore_kit.paths import DEMO_SIZE_KEYS, demo_data_dir

    monkeypatch.setenv("PATCHCORE_KIT_DATA", str(tmp_path))
    defaults = {
        k: p.default for k, p in inspect.signature(build_demo_dataset).parameters.items() if k in DEMO_SIZE_KEYS
    }
    assert report.FULL.build_sizes() == defaults  # so the full report shares data/demo with the notebooks
    folders = [demo_data_dir(), demo_data_dir(report.FAST.build_sizes()), demo_data_dir(FAST_DEMO)]
    assert [f.name for f in folders] == ["demo", "demo_64px_6-3-1", "demo_128px_10-4-2"]
    with pytest.raises(ValueError, match="n_test_good"):
        demo_data_dir({"image_size": 64, "n_train": 6})
