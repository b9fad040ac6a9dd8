"""Bad input, as a user meets it: exit status 2, one line naming the file, no traceback, nothing touched.

Every case runs ``patchcore_kit.cli.main`` in-process and hashes the user's files before and after.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchcore_kit.base import parameter_names
from patchcore_kit.cli import main
from patchcore_kit.errors import InputError
from patchcore_kit.patchcore import PatchCore

FAST = ["--image-size", "64", "--coreset-ratio", "0.25"]


def tree_digest(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file below ``root`` (folders too, so new ones show up)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``main(args)`` -> (exit status, stderr); argparse's own errors leave through SystemExit."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *names) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("patchcore-kit"), lines[0]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def user_files(tmp_path, make_mvtec):
    """A tiny MVTec category plus a file of the user's that must survive every run."""
    root = make_mvtec(n_train=3, test={"good": 2, "scratch": 2})
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    return root, precious


def evaluate_args(root, out, *extra):
    return ["evaluate", root, "--format", "mvtec", "--output", out, *FAST, *extra]


def test_missing_dataset_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_data"
    code, err = run_cli(evaluate_args(missing, tmp_path / "out"), capsys)
    assert_one_line_error(code, err, missing)
    assert not (tmp_path / "out").exists()  # a failed run leaves nothing behind


def test_unknown_category_lists_the_available_ones(user_files, tmp_path, capsys):
    root, _ = user_files
    before = tree_digest(tmp_path)
    code, err = run_cli(evaluate_args(root, tmp_path / "out", "--category", "gadget"), capsys)
    line = assert_one_line_error(code, err, root, "gadget", "widget")
    assert "unknown category" in line
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("where", ["test/scratch/001.png", "train/good/002.png"])
def test_corrupt_image_in_the_dataset_is_named(user_files, tmp_path, capsys, where):
    root, _ = user_files
    broken = root / "widget" / where
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated PNG
    before = tree_digest(tmp_path)
    code, err = run_cli(evaluate_args(root, tmp_path / "out"), capsys)
    assert_one_line_error(code, err, broken)
    assert tree_digest(tmp_path) == before  # no output folder, no change to the data


def test_mask_of_the_wrong_size_is_named(user_files, tmp_path, capsys, mask_writer):
    root, _ = user_files
    mask = root / "widget" / "ground_truth" / "scratch" / "000_mask.png"
    mask_writer(mask, size=(20, 16))  # PIL's (width, height): 16 rows of 20
    before = tree_digest(root)
    code, err = run_cli(evaluate_args(root, tmp_path / "out"), capsys)
    line = assert_one_line_error(code, err, mask)
    assert "mask is 16x20 but its image is 16x16 (height x width)" in line  # the kit's order, as --image-size
    assert tree_digest(root) == before


def test_unknown_backbone_lists_the_choices(user_files, tmp_path, capsys):
    root, _ = user_files
    code, err = run_cli(evaluate_args(root, tmp_path / "out", "--backbone", "vgg16"), capsys)
    line = assert_one_line_error(code, err, "vgg16", "efficientnet_lite0", "wide_resnet50_2")
    assert "--backbone" in line


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--layers", "layer2", "layer9"], ["layer9", "layer1", "layer4"]),
        (["--coreset-ratio", "1.5"], ["coreset", "1.5"]),
        (["--image-size", "big"], ["big"]),
        (["--patch-size", "4"], ["patch size", "odd", "4"]),
        (["--patch-size", "0"], ["patch size", "0"]),
        (["--shots", "99"], ["99", "3"]),
        (["--shots", "0"], ["shots", "0"]),
    ],
)
def test_bad_model_options(user_files, tmp_path, capsys, extra, names):
    root, _ = user_files
    before = tree_digest(tmp_path)
    code, err = run_cli(evaluate_args(root, tmp_path / "out", *extra), capsys)
    assert_one_line_error(code, err, *names)
    assert tree_digest(tmp_path) == before


def test_missing_weights_file_names_it_and_the_offline_backbones(user_files, tmp_path, capsys):
    root, _ = user_files
    weights = tmp_path / "wrn50.pth"
    code, err = run_cli(evaluate_args(root, tmp_path / "out", "--backbone", "resnet18", "--weights", weights), capsys)
    assert_one_line_error(code, err, weights, "efficientnet_lite0")


def test_output_that_is_a_file_is_refused_and_untouched(user_files, tmp_path, capsys):
    root, precious = user_files
    before = tree_digest(tmp_path)
    code, err = run_cli(evaluate_args(root, precious), capsys)
    assert_one_line_error(code, err, precious, "not a folder")
    code, err = run_cli(evaluate_args(root, precious / "run"), capsys)  # a folder *below* a file
    assert_one_line_error(code, err, precious)
    assert tree_digest(tmp_path) == before
    assert precious.read_text() == "my notes"


def test_fit_never_overwrites_a_file_it_did_not_write(user_files, tmp_path, capsys):
    root, precious = user_files
    train = root / "widget" / "train" / "good"
    image = train / "000.png"
    before = tree_digest(tmp_path)
    for target in (image, precious):
        code, err = run_cli(["fit", train, "--output", target, *FAST], capsys)
        assert_one_line_error(code, err, target, "refusing to overwrite")
    code, err = run_cli(["fit", train, "--output", tmp_path, *FAST], capsys)
    assert_one_line_error(code, err, tmp_path, "is a folder")
    assert tree_digest(tmp_path) == before


def test_fit_on_a_folder_without_images_or_a_missing_path(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    code, err = run_cli(["fit", empty, "--output", tmp_path / "m.safetensors"], capsys)
    assert_one_line_error(code, err, empty, "no images")
    code, err = run_cli(["fit", tmp_path / "nope", "--output", tmp_path / "m.safetensors"], capsys)
    assert_one_line_error(code, err, tmp_path / "nope")
    assert not (tmp_path / "m.safetensors").exists()


def test_predict_with_bad_model_or_output(user_files, tmp_path, capsys):
    root, precious = user_files
    train = root / "widget" / "train" / "good"
    image = root / "widget" / "test" / "good" / "000.png"
    model = tmp_path / "model.safetensors"
    assert run_cli(["fit", train, "--output", model, *FAST], capsys)[0] == 0
    before = tree_digest(tmp_path)

    code, err = run_cli(["predict", precious, image], capsys)  # not a model
    assert_one_line_error(code, err, precious)
    code, err = run_cli(["predict", tmp_path / "missing.safetensors", image], capsys)
    assert_one_line_error(code, err, tmp_path / "missing.safetensors")
    code, err = run_cli(["predict", model, tmp_path / "nope.png"], capsys)
    assert_one_line_error(code, err, tmp_path / "nope.png")
    for target in (model, image, precious):  # --output must not clobber the model, an image or notes
        code, err = run_cli(["predict", model, image, "--output", target], capsys)
        assert_one_line_error(code, err, target, "refusing to overwrite")
    assert tree_digest(tmp_path) == before


# --- the library itself names bad files the same way -----------------------------------------------
def test_estimator_names_a_bad_image(tmp_path, png_writer):
    good = [png_writer(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    with pytest.raises(InputError) as error:
        PatchCore(image_size=64).fit([*good, broken])
    assert str(error.value).startswith(str(broken))
    model = PatchCore(image_size=64, calibrate=False).fit(good)
    with pytest.raises(InputError) as error:
        model.decision_function([good[0], tmp_path / "gone.png"])
    assert str(error.value).startswith(str(tmp_path / "gone.png"))
    with pytest.raises(InputError):
        model.decision_function([np.full((8, 8, 3), np.inf)])
    assert Image.open(good[0]).size == (16, 16)  # inputs are only read


# --- a model file with the right format tag but damaged insides ------------------------------------


def _edit_json(key, change):
    def edit(tensors, metadata):
        value = json.loads(metadata[key])
        change(value)
        metadata[key] = json.dumps(value)

    return edit


DAMAGE = {
    "params not JSON": (lambda t, m: m.update(params="{not json"), ["'params'", "not JSON"]),
    "params not an object": (lambda t, m: m.update(params="[1, 2]"), ["'params'", "not a JSON object"]),
    "no fitted metadata": (lambda t, m: m.pop("fitted"), ["'fitted'"]),
    "missing parameter": (_edit_json("params", lambda p: p.pop("backbone")), ["missing parameters", "backbone"]),
    "unknown parameter": (_edit_json("params", lambda p: p.update(colour="red")), ["unknown parameters", "colour"]),
    "layers of the wrong type": (_edit_json("params", lambda p: p.update(layers=3)), ["'layers'", "list of stage"]),
    "image size of the wrong type": (
        _edit_json("params", lambda p: p.update(image_size="big")),
        ["'image_size'", "'big'"],
    ),
    "calibrate not a bool": (_edit_json("params", lambda p: p.update(calibrate="yes")), ["'calibrate'"]),
    "missing fitted value": (_edit_json("fitted", lambda f: f.pop("n_train_")), ["missing fitted values", "n_train_"]),
    "unknown fitted value": (
        _edit_json("fitted", lambda f: f.update(memory_bank_=[1])),
        ["unknown fitted", "memory_bank_"],
    ),
    "feature shape not a pair": (_edit_json("fitted", lambda f: f.update(feature_shape_=4)), ["'feature_shape_'"]),
    "patch count does not add up": (_edit_json("fitted", lambda f: f.update(n_patches_=7)), ["n_patches_ 7"]),
    "missing array": (lambda t, m: t.pop("bank_image"), ["missing arrays", "bank_image"]),
    "unknown array": (lambda t, m: t.update(extra=torch.zeros(1)), ["unknown arrays", "extra"]),
    "memory bank not 2-D": (lambda t, m: t.update(memory_bank=t["memory_bank"].flatten()), ["memory_bank", "2-D"]),
    "indices of the wrong dtype": (lambda t, m: t.update(bank_image=t["bank_image"].float()), ["bank_image", "int64"]),
    "indices of the wrong length": (
        lambda t, m: t.update(coreset_indices=t["coreset_indices"][:1]),
        ["coreset_indices"],
    ),
    "indices out of range": (lambda t, m: t.update(bank_image=t["bank_image"] + 5), ["bank_image", "[0, 2)"]),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_load_names_the_file_and_what_is_wrong_inside_it(saved_model, tmp_path, damage, refuse_damaged):
    refuse_damaged(saved_model, tmp_path, *DAMAGE[damage])


def test_load_checks_every_parameter_and_reads_the_undamaged_file(saved_model, tmp_path):
    from safetensors.torch import save_file

    from patchcore_kit.params import RULES

    assert set(parameter_names(PatchCore)) <= set(RULES)  # every parameter has one rule, shared with fit and the CLI
    _, tensors, metadata = saved_model
    save_file(tensors, tmp_path / "copy.safetensors", metadata=metadata)
    model = PatchCore.load(tmp_path / "copy.safetensors")
    assert model.image_size == 32 and torch.equal(model.memory_bank_, tensors["memory_bank"])
