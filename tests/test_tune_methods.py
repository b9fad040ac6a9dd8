"""tune for PaDiM and SPADE: each method's own grid, settings that know their method, the sweep at
every method's own setting (issue #10 item 6)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from patchcore_kit import InputError, PatchCore, load_settings, tune
from patchcore_kit.baselines import SPADE, PaDiM
from patchcore_kit.cli import main
from patchcore_kit.tuning import estimator_from_settings, load_grid
from patchcore_kit.tuning.grid import candidate_name, model_params

#: Tiny grids: two candidates each on 64 px images (layer3 is a 4 x 4 grid there).
PADIM_TINY = {"layers": [["layer3"], ["layer2", "layer3"]], "n_features": [8], "image_size": [64]}
SPADE_TINY = {
    "layers": [["layer3"], ["layer2", "layer3"]],
    "global_layer": ["layer4"],
    "top_k_images": [3],
    "image_size": [64],
}


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_each_method_has_its_own_default_grid_and_keys():
    padim, padim_fixed = load_grid(None, "padim")
    assert {c["layers"] for c in padim} == {
        ("layer1", "layer2", "layer3"),
        ("layer2", "layer3"),
        ("layer3",),
        ("layer3", "layer4"),
    }
    assert {c["aspect"] for c in padim} == {"stretch", "keep"} and {c["n_features"] for c in padim} == {"auto"}
    assert padim_fixed == {"backbone": "efficientnet_lite0", "weights": None}  # no coreset: PaDiM has none
    spade, _ = load_grid(None, "spade")
    assert {c["layers"] for c in spade} == {("layer1", "layer2", "layer3"), ("layer2", "layer3"), ("layer3",)}
    assert {c["global_layer"] for c in spade} == {"layer4", None}
    assert len(load_grid(None)[0]) == 24  # PatchCore's is unchanged
    # names say what differs from the method's own defaults; PatchCore's keep their old form (resume)
    assert candidate_name(padim[0], "padim") == "layer1+2+3, 224 px"
    assert candidate_name({**spade[0], "global_layer": None}, "spade") == "layer1+2+3, 224 px, global_layer None"
    assert candidate_name(load_grid(None)[0][0]) == "layer2+3, 224 px, p=1"
    # a baseline's None is a value, not "the default": SPADE pools its deepest pixel stage, PaDiM keeps all channels
    assert model_params({**spade[0], "global_layer": None}, {}, [1.0], "spade")["global_layer"] is None
    assert model_params({**padim[0], "n_features": None}, {}, [1.0], "padim")["n_features"] is None


@pytest.mark.parametrize(
    "method, grid, message",
    [
        ("padim", {"patch_size": [1]}, r"unknown grid key 'patch_size' for PaDiM \(PatchCore has it\)"),
        ("padim", {"global_layer": ["layer4"]}, r"unknown grid key 'global_layer' for PaDiM \(SPADE has it\)"),
        ("spade", {"n_features": [10]}, r"unknown grid key 'n_features' for SPADE \(PaDiM has it\)"),
        ("patchcore", {"top_k_images": [5]}, r"unknown grid key 'top_k_images' for PatchCore \(SPADE has it\)"),
        (
            "padim",
            {"layers": [["layer3"]], "fixed": {"coreset_ratio": 0.1}},
            r"unknown fixed option 'coreset_ratio' for PaDiM \(PatchCore has it\)",
        ),
        ("padim", {"n_features": [0]}, "n_features must be auto, a positive whole number or null"),
        ("padim", {"epsilon": [0]}, "epsilon must be a positive number"),
        ("spade", {"global_layer": ["layer5"]}, "global_layer must be a stage"),
        ("spade", {"top_k_images": [0]}, "top_k_images must be a positive whole number"),
        ("spade", {"layers": [["layer0"]]}, "unknown stage 'layer0'"),
    ],
)
def test_a_key_or_value_the_method_does_not_have_is_one_clear_error(method, grid, message):
    with pytest.raises(InputError, match=message):
        load_grid(grid, method)


def test_unknown_method_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="unknown method 'cflow'; choose one of patchcore, padim, spade"):
        tune(tmp_path, "mvtec", output=tmp_path / "o", method="cflow", progress=False)


@pytest.mark.parametrize(
    "method, grid, estimator, names",
    [
        ("padim", PADIM_TINY, PaDiM, {"layer3, 64 px, n_features 8", "layer2+3, 64 px, n_features 8"}),
        ("spade", SPADE_TINY, SPADE, {"layer3, 64 px, top_k_images 3", "layer2+3, 64 px, top_k_images 3"}),
    ],
)
def test_tune_a_baseline_and_its_settings_round_trip(make_mvtec, tmp_path, one_thread, method, grid, estimator, names):
    root = make_mvtec(n_train=9, test={"good": 3, "scratch": 4, "dent": 4}, size=(48, 48))
    out = tmp_path / method
    settings = tune(root, "mvtec", "widget", output=out, grid=grid, folds=3, method=method, progress=False)
    rows = _rows(out / "candidates.csv")
    assert {r["setting"] for r in rows} == names and len(_rows(out / "folds.csv")) == 6
    assert settings["method"] == method and settings["protocol"]["method"] == method
    assert settings["setting"] == max(rows, key=lambda r: float(r["image_auroc"]))["setting"]
    assert json.loads((out / "settings.json").read_text()) == settings

    # the params are the estimator's own, and build it exactly (three ways)
    params = load_settings(out / "settings.json", method)
    model = estimator(**params)
    assert all(getattr(model, key) == value for key, value in params.items())
    assert model.layers in (("layer3",), ("layer2", "layer3")) and model.image_size == 64
    direct = estimator(**settings["params"])
    assert direct.get_params() == {**model.get_params(), "layers": list(model.layers)}
    built = estimator_from_settings(out / "settings.json", device="cpu")
    assert type(built) is estimator and built.get_params() == model.get_params()

    # ... and into evaluate, which builds that estimator (not PatchCore) and reports the held-out figure
    report = tmp_path / f"eval_{method}"
    assert (
        main(
            [
                "evaluate",
                str(root),
                "--format",
                "mvtec",
                "--settings",
                str(out / "settings.json"),
                "--output",
                str(report),
            ]
        )
        == 0
    )
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["layers"] == list(model.layers) and metrics["image_size"] == 64
    assert "memory_bank" not in metrics and metrics["held_out"]["n_defective"] == 4
    if method == "padim":
        assert metrics["n_features"] == 8
    else:
        assert metrics["top_k_images"] == 3 and metrics["global_layer"] == "layer4"

    # a baseline's settings where PatchCore's are expected: one clear error, never a PatchCore
    with pytest.raises(InputError, match=f"holds {estimator.__name__} settings .*but PatchCore settings are needed"):
        load_settings(out / "settings.json")
    assert (
        main(
            [
                "fit",
                str(root / "widget" / "train" / "good"),
                "--settings",
                str(out / "settings.json"),
                "--output",
                str(tmp_path / "m.safetensors"),
            ]
        )
        == 2
    )
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
                str(tmp_path / "e2"),
            ]
        )
        == 2
    )


def test_cli_tune_method_and_old_settings_files_stay_patchcore(make_mvtec, tmp_path, one_thread, capsys):
    root = make_mvtec(n_train=9, test={"good": 2, "dent": 4}, size=(48, 48))
    grid = tmp_path / "g.yaml"
    grid.write_text("layers: [[layer3]]\nn_features: [4]\nimage_size: [64]\n")
    assert (
        main(
            [
                "tune",
                str(root),
                "--format",
                "mvtec",
                "--method",
                "padim",
                "--folds",
                "3",
                "--grid",
                str(grid),
                "--output",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert "PaDiM(**load_settings(" in capsys.readouterr().out
    assert json.loads((tmp_path / "t" / "settings.json").read_text())["method"] == "padim"
    # a PaDiM grid given to a PatchCore tune names the key and the method
    assert (
        main(
            [
                "tune",
                str(root),
                "--format",
                "mvtec",
                "--folds",
                "3",
                "--grid",
                str(grid),
                "--output",
                str(tmp_path / "t2"),
            ]
        )
        == 2
    )
    assert "unknown grid key 'n_features' for PatchCore (PaDiM has it)" in capsys.readouterr().err
    # a settings file written before tunes had a method is PatchCore's
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"params": {"layers": ["layer3"], "patch_size": 1, "image_size": 64}}))
    assert PatchCore(**load_settings(old)).patch_size == 1
    with pytest.raises(InputError, match="holds PatchCore settings .*but PaDiM settings are needed"):
        load_settings(old, "padim")
    assert isinstance(estimator_from_settings(old), PatchCore)


def _settings_file(path: Path, method: str, params: dict) -> Path:
    path.write_text(json.dumps({"method": method, "params": params}))
    return path


def test_sweep_runs_every_method_at_its_own_settings(make_mvtec, tmp_path, one_thread, monkeypatch):
    root = make_mvtec(n_train=6, test={"good": 2, "dent": 2}, size=(48, 48))
    patchcore = _settings_file(
        tmp_path / "pc.json",
        "patchcore",
        {"layers": ["layer3"], "patch_size": 1, "image_size": 64, "coreset_ratio": 0.5},
    )
    padim = _settings_file(
        tmp_path / "padim.json",
        "padim",
        {
            "layers": ["layer3", "layer4"],
            "n_features": 6,
            "image_size": [96, 64],
            "backbone": "efficientnet_lite0",
            "weights": None,
        },
    )
    spade = _settings_file(
        tmp_path / "spade.json",
        "spade",
        {
            "layers": ["layer2", "layer3"],
            "global_layer": None,
            "top_k_images": 2,
            "image_size": 64,
            "backbone": "efficientnet_lite0",
            "weights": None,
        },
    )
    built = {}
    from patchcore_kit.experiments import cell

    original = cell.fit_and_score  # the module SweepCells calls it from (the package re-export is not what runs)

    def spy(model, split, *, masks, pixel):
        estimator = getattr(model, "model", model)  # PatchCore comes wrapped to score the shared test embeddings
        built[type(estimator).__name__] = (estimator, None if masks is None else masks.shape[1:])
        return original(model, split, masks=masks, pixel=pixel)

    monkeypatch.setattr(cell, "fit_and_score", spy)
    out = tmp_path / "sweep"
    # a plain path goes to the method its file records; METHOD=PATH must name that method
    assert (
        main(
            [
                "sweep",
                str(root),
                "--format",
                "mvtec",
                "--category",
                "widget",
                "--shots",
                "3",
                "--seeds",
                "0",
                "--spade-table-gb",
                "0",
                "--settings",
                str(patchcore),
                f"padim={padim}",
                f"spade={spade}",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    model, mask_shape = built["PatchCore"]
    assert model.layers == ("layer3",) and model.patch_size == 1 and model.image_size == 64 and mask_shape == (64, 64)
    model, mask_shape = built["PaDiM"]
    assert tuple(model.layers) == ("layer3", "layer4") and model.n_features == 6 and mask_shape == (96, 64)
    model, _ = built["SPADE"]
    assert tuple(model.layers) == ("layer2", "layer3") and model.global_layer is None and model.top_k_images == 2
    results = _rows(out / "results.csv")
    assert sorted(r["method"] for r in results) == ["padim", "patchcore", "spade"]
    assert all(r["pixel_auroc"] not in ("", None) for r in results)
    assert "their own settings" in (out / "claims.md").read_text()
    # the file's method and the name given must agree
    assert (
        main(
            [
                "sweep",
                str(root),
                "--format",
                "mvtec",
                "--category",
                "widget",
                "--shots",
                "3",
                "--seeds",
                "0",
                "--settings",
                f"spade={padim}",
                "--output",
                str(tmp_path / "s2"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "sweep",
                str(root),
                "--format",
                "mvtec",
                "--category",
                "widget",
                "--shots",
                "3",
                "--seeds",
                "0",
                "--settings",
                str(padim),
                f"padim={padim}",
                "--output",
                str(tmp_path / "s3"),
            ]
        )
        == 2
    )
