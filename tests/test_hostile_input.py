"""Issue #15, hostile but realistic input: no code runs, no result is lost, every mistake gets one line.

One test (or one parametrized group) per item of the issue; each failed on the code before the fix.
``test_bad_input.py`` holds the cases that already passed then.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from test_bad_input import assert_one_line_error, run_cli, tree_digest

from patchcore_kit.base import parameter_names
from patchcore_kit.errors import InputError, WeightsUnavailableError
from patchcore_kit.patchcore import PatchCore

FAST = ["--image-size", "64", "--coreset-ratio", "0.25"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mvtec(make_mvtec):
    return make_mvtec(n_train=3, test={"good": 2, "scratch": 2})


@pytest.fixture
def no_backbone(monkeypatch):
    """Any backbone load fails the test: proves a refusal came before the compute."""

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the input was checked")

    monkeypatch.setattr("patchcore_kit.extractor.load_backbone", refuse)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp, on a machine offline (every download raises)."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError(f"offline test: no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch_home" / "hub", calls


# --- 1. code execution from the torch hub cache ----------------------------------------------------
class _Payload:
    """Unpickling this runs ``exec``: what a poisoned checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_poisoned_hub_cache_file_never_runs_its_code(hub, tmp_path, mvtec, capsys):
    import torchvision

    hub_dir, _ = hub
    marker = tmp_path / "PWNED"
    cached = hub_dir / "checkpoints" / Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": _Payload(marker)}, cached)

    from patchcore_kit.backbones import load_backbone

    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("resnet18")
    assert not marker.exists()  # the payload never ran
    message = str(error.value)
    assert message.startswith(str(cached)) and "not a plain weights file" in message
    assert "weights_only" not in message  # no advice to turn the protection off
    code, err = run_cli(
        [
            "fit",
            mvtec / "widget" / "train" / "good",
            "--backbone",
            "resnet18",
            "--output",
            tmp_path / "m.safetensors",
            *FAST,
        ],
        capsys,
    )
    assert_one_line_error(code, err, cached, "not a plain weights file")
    assert not marker.exists()


def test_poisoned_weights_file_and_url_never_run_their_code(tmp_path, hub):
    from patchcore_kit.backbones import _read_state_dict

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(marker)}, evil)
    with pytest.raises(WeightsUnavailableError, match="not a plain weights file"):
        _read_state_dict(evil)
    hub_dir, _ = hub
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / "evil.pth").write_bytes(evil.read_bytes())  # as if downloaded earlier
    with pytest.raises(WeightsUnavailableError, match="not a plain weights file"):
        _read_state_dict("https://example.invalid/evil.pth")
    assert not marker.exists()


# --- 2. results destroyed by a crash; any file name the OS allows ---------------------------------
def _odd_name(folder: Path) -> Path:
    return folder / os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes: not UTF-8


def test_predict_writes_non_utf8_names_whole_and_keeps_the_old_file_until_then(mvtec, tmp_path, capsys, png_writer):
    train = mvtec / "widget" / "train" / "good"
    model = tmp_path / "m.safetensors"
    assert run_cli(["fit", train, "--output", model, *FAST], capsys)[0] == 0
    images = tmp_path / "images"
    for i in range(4):
        png_writer(images / f"{i}.png", seed=i)
    scores = tmp_path / "s.csv"
    assert run_cli(["predict", model, images, "--output", scores], capsys)[0] == 0
    assert len(scores.read_bytes().splitlines()) == 5
    odd = png_writer(_odd_name(images), seed=9)
    code, err = run_cli(["predict", model, images, "--output", scores], capsys)
    assert code == 0, err
    lines = scores.read_bytes().splitlines()
    assert len(lines) == 6 and any(line.startswith(os.fsencode(odd) + b",") for line in lines)
    code, _ = run_cli(["predict", model, odd], capsys)  # printed too, without a crash
    assert code == 0


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    from patchcore_kit.atomic import write_csv

    target = tmp_path / "scores.csv"
    write_csv(target, [{"path": "a", "score": 1}])
    before = target.read_bytes()

    class Boom:
        def __str__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(target, [{"path": "b", "score": 2}, {"path": "c", "score": Boom()}])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]  # no temporary left behind


def test_evaluate_handles_non_utf8_file_names(make_mvtec, tmp_path, capsys, png_writer):
    root = make_mvtec(n_train=3, test={"good": 2, "scratch": 1}, masks=False)
    odd = png_writer(_odd_name(root / "widget" / "test" / "good"), seed=7)
    out = tmp_path / "run"
    code, err = run_cli(["evaluate", root, "--format", "mvtec", "--output", out, *FAST], capsys)
    assert code == 0, err
    assert os.fsencode(odd.name) in (out / "scores.csv").read_bytes()
    assert json.loads((out / "metrics.json").read_text())["n_test"] == 4


# --- 3. output inside the dataset ------------------------------------------------------------------
def test_output_inside_the_dataset_or_holding_it_is_refused(mvtec, tmp_path, capsys, no_backbone):
    train = mvtec / "widget" / "train" / "good"
    before = tree_digest(tmp_path)
    code, err = run_cli(
        [
            "sweep",
            mvtec,
            "--format",
            "mvtec",
            "--shots",
            "1",
            "--seeds",
            "0",
            "--methods",
            "patchcore",
            "--image-size",
            "64",
            "--output",
            train,
        ],
        capsys,
    )
    assert_one_line_error(code, err, train, "inside the dataset")
    code, err = run_cli(["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path, *FAST], capsys)
    assert_one_line_error(code, err, tmp_path, "holds the dataset")
    code, err = run_cli(
        [
            "evaluate",
            mvtec,
            "--format",
            "mvtec",
            "--output",
            tmp_path / "run",
            "--feature-cache",
            str(mvtec / "cache"),
            *FAST,
        ],
        capsys,
    )
    assert_one_line_error(code, err, mvtec / "cache", "inside the dataset")
    assert tree_digest(tmp_path) == before


# --- 4. damaged models ------------------------------------------------------------------------------


def _with_params(**changes):
    def edit(tensors, metadata):
        params = json.loads(metadata["params"])
        params.update(changes)
        metadata["params"] = json.dumps(params)

    return edit


def _nan_bank(tensors, metadata):
    bank = tensors["memory_bank"].clone()
    bank[0, 0] = float("nan")
    tensors["memory_bank"] = bank


DAMAGED_MODELS = {
    "patch size -3": (_with_params(patch_size=-3), ["'patch_size'", "-3"]),
    "patch size 4": (_with_params(patch_size=4), ["'patch_size'", "odd"]),
    "batch size 0": (_with_params(batch_size=0), ["'batch_size'"]),
    "target_dim 0": (_with_params(target_dim=0), ["'target_dim'"]),
    "num_neighbors 0": (_with_params(num_neighbors=0), ["'num_neighbors'"]),
    "image size 1": (_with_params(image_size=1), ["'image_size'"]),
    "unknown backbone": (_with_params(backbone="vgg16"), ["'backbone'", "vgg16"]),
    "device": (_with_params(device="tpu"), ["'device'"]),
    "threshold quantile": (_with_params(threshold_quantile=7), ["'threshold_quantile'"]),
    "layers that do not match the bank": (_with_params(layers=["layer3"]), ["memory_bank", "152", "112"]),
    "target_dim that does not match": (_with_params(target_dim=64), ["memory_bank", "64"]),
    "NaN in the bank": (_nan_bank, ["memory_bank", "NaN"]),
    "unknown aggregation": (_with_params(aggregation="max"), ["'aggregation'", "mean, unfold"]),
    "unknown border": (_with_params(border="wrap"), ["'border'", "wrap"]),
    "pretrain_dim 0": (_with_params(pretrain_dim=0), ["'pretrain_dim'"]),
    "unfold with a valid border": (_with_params(aggregation="unfold", border="valid"), ["unfold", "valid"]),
    "NaN threshold": (
        lambda t, m: m.update(fitted=m["fitted"].replace('"threshold_": null', '"threshold_": NaN')),
        ["'threshold_'"],
    ),
}


@pytest.mark.parametrize("damage", DAMAGED_MODELS, ids=list(DAMAGED_MODELS))
def test_damaged_model_is_refused_before_scoring(saved_model, tmp_path, capsys, damage, png_writer, refuse_damaged):
    path = refuse_damaged(saved_model, tmp_path, *DAMAGED_MODELS[damage])
    code, err = run_cli(["predict", path, png_writer(tmp_path / "x.png")], capsys)
    assert_one_line_error(code, err, path)


def test_model_files_without_the_newer_parameters_still_load(saved_model, tmp_path):
    from safetensors.torch import save_file

    from patchcore_kit.modelfile import DEFAULTS

    _, tensors, metadata = saved_model
    params = json.loads(metadata["params"])
    for name in DEFAULTS:
        params.pop(name, None)  # a file written before aggregation, border and pretrain_dim existed
    save_file(dict(tensors), tmp_path / "old.safetensors", metadata={**metadata, "params": json.dumps(params)})
    model = PatchCore.load(tmp_path / "old.safetensors")
    for name, value in DEFAULTS.items():
        if name in parameter_names(PatchCore):
            assert getattr(model, name) == value


def test_the_estimator_checks_its_parameters_before_the_backbone_runs(no_backbone, png_writer, tmp_path):
    images = [png_writer(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    for params, word in [
        ({"patch_size": 4}, "patch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"target_dim": 0}, "target_dim"),
        ({"image_size": 1}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"num_neighbors": 0}, "num_neighbors"),
        ({"layers": ("layer2", "layer3"), "target_dim": 1}, "target_dim"),
    ]:
        with pytest.raises(InputError, match=word):
            PatchCore(**params).fit(images)


# --- 5. tracebacks where the CLI promises one line and exit status 2 --------------------------------
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width x height`` pixels (no pixel data needed to trip the bomb check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_one_line(mvtec, tmp_path, capsys):
    bomb = _png_header_only(mvtec / "widget" / "train" / "good" / "999.png", 14000, 14000)
    before = tree_digest(tmp_path)
    code, err = run_cli(["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path / "out", *FAST], capsys)
    assert_one_line_error(code, err, bomb, "too large")
    assert tree_digest(tmp_path) == before


def test_unwritable_output_is_found_before_the_compute(mvtec, tmp_path, capsys, no_backbone):
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system it cannot
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no read-only folder to try as root")
        out = Path("/sys/kernel/patchcore-kit-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "out"
    for command in (
        ["evaluate", mvtec, "--format", "mvtec", "--output", out, *FAST],
        ["fit", mvtec / "widget" / "train" / "good", "--output", out / "m.safetensors", *FAST],
    ):
        code, err = run_cli(command, capsys)
        assert_one_line_error(code, err, out, "cannot write")


@pytest.mark.parametrize(
    "option",
    [
        ["--image-size", "0"],
        ["--image-size", "-5"],
        ["--image-size", "0x64"],
        ["--image-size", "1"],
        ["--batch-size", "0"],
        ["--seed", "-1"],
        ["--target-dim", "0"],
        ["--num-neighbors", "0"],
        ["--device", "tpu"],
        ["--layers", "layer2", "layer3", "--target-dim", "1"],
        ["--pretrain-dim", "0"],
        ["--border", "valid", "--aggregation", "unfold"],
    ],
)
def test_bad_values_are_one_line(mvtec, tmp_path, capsys, option, no_backbone):
    code, err = run_cli(["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path / "out", *FAST, *option], capsys)
    assert_one_line_error(code, err, option[-2].lstrip("-").split("-")[0])
    assert not (tmp_path / "out").exists()


def test_missing_cuda_is_one_line(mvtec, tmp_path, capsys, monkeypatch, no_backbone):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_cli(
        ["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path / "out", *FAST, "--device", "cuda"], capsys
    )
    assert_one_line_error(code, err, "cuda", "not available")


def test_download_to_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, err = run_cli(["download", "mtd", target], capsys)
    assert_one_line_error(code, err, target, "not a folder")
    assert target.read_text() == "mine"


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """Ctrl-C while torch is still loading: simulated by an import hook that raises KeyboardInterrupt."""
    script = tmp_path / "run.py"
    script.write_text(
        "import runpy, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['patchcore-kit', 'fit', 'nothing', '--output', 'm.safetensors']\n"
        "runpy.run_module('patchcore_kit.cli', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == "patchcore-kit: interrupted" and result.returncode == 130


# --- 6. an upper bound on work -----------------------------------------------------------------------
def test_a_run_that_will_not_fit_in_memory_is_refused_at_once(mvtec, tmp_path, capsys, no_backbone):
    start = time.perf_counter()
    code, err = run_cli(
        ["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path / "out", "--image-size", "8000"], capsys
    )
    line = assert_one_line_error(code, err, "--image-size 8000", "--max-memory", "GiB")
    assert time.perf_counter() - start < 10, line


def test_max_memory_sets_the_limit_and_overrides_the_estimate(mvtec, tmp_path, capsys, monkeypatch):
    from patchcore_kit import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 64 * 2**20)  # a machine with 64 MiB free
    args = ["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path / "out", *FAST]
    assert_one_line_error(*run_cli(args, capsys), "--max-memory", "64.0 MiB")
    assert run_cli([*args, "--max-memory", "4G"], capsys)[0] == 0


def test_the_estimate_costs_microseconds():
    from patchcore_kit.memory import estimate

    start = time.perf_counter()
    for _ in range(1000):
        estimate(224, ["layer2", "layer3"], {"layer2": 40, "layer3": 112}, "efficientnet_lite0", 100, 50)
    assert time.perf_counter() - start < 0.5


# --- 7. one overwrite rule for every command ------------------------------------------------------
def test_evaluate_keeps_the_users_metrics_unless_told(mvtec, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": true}')
    args = ["evaluate", mvtec, "--format", "mvtec", "--output", out, *FAST]
    assert_one_line_error(*run_cli(args, capsys), out, "--overwrite")
    assert (out / "metrics.json").read_text() == '{"mine": true}'
    assert run_cli([*args, "--overwrite"], capsys)[0] == 0
    assert "image_auroc" in json.loads((out / "metrics.json").read_text())
    assert run_cli(args, capsys)[0] == 0  # a folder the kit wrote may be written again


def test_overwrite_lets_fit_and_predict_replace_a_file_but_never_an_input(mvtec, tmp_path, capsys):
    train = mvtec / "widget" / "train" / "good"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_one_line_error(*run_cli(["fit", train, "--output", notes, *FAST], capsys), notes, "--overwrite")
    assert run_cli(["fit", train, "--output", notes, *FAST, "--overwrite"], capsys)[0] == 0
    image = train / "000.png"
    assert_one_line_error(*run_cli(["fit", train, "--output", image, *FAST, "--overwrite"], capsys), image, "input")


# --- 8. smaller ---------------------------------------------------------------------------------------
def test_mask_errors_come_before_the_fit(mvtec, tmp_path, capsys, mask_writer, no_backbone):
    mask = mvtec / "widget" / "ground_truth" / "scratch" / "000_mask.png"
    mask_writer(mask, size=(20, 16))
    code, err = run_cli(["evaluate", mvtec, "--format", "mvtec", "--output", tmp_path / "out", *FAST], capsys)
    assert_one_line_error(code, err, mask, "mask is 16x20")  # (height x width)


def test_a_pickle_of_objects_is_named_without_torch_advice(tmp_path):
    from patchcore_kit.backbones import load_backbone

    path = tmp_path / "objects.pth"
    torch.save({"state": Path("x")}, path)  # a plain object, not a tensor: refused by weights_only
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("resnet18", weights=path)
    message = str(error.value)
    assert message.startswith(str(path)) and "not a plain weights file" in message and ".safetensors" in message
    assert "weights_only" not in message and "\n" not in message


def test_model_files_follow_the_umask(saved_model, tmp_path):
    _, tensors, metadata = saved_model
    model = PatchCore.load(saved_model[0])
    old = os.umask(0o022)
    try:
        path = model.save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_download_leaves_no_empty_folder(tmp_path):
    from patchcore_kit.data import download_mtd
    from patchcore_kit.data.download import DownloadError

    dest = tmp_path / "new" / "mtd"
    with pytest.raises(DownloadError):
        download_mtd(dest, url=(tmp_path / "missing.zip").as_uri(), progress=False)
    assert sorted(tmp_path.iterdir()) == []


def test_predict_never_fetches_a_weights_url_from_the_model_file(saved_model, tmp_path, capsys, hub, png_writer):
    from safetensors.torch import save_file

    _, tensors, metadata = saved_model
    params = json.loads(metadata["params"])
    params["weights"] = "http://127.0.0.1:9/weights.pth"
    path = tmp_path / "url.safetensors"
    save_file(dict(tensors), path, metadata={**metadata, "params": json.dumps(params)})
    code, err = run_cli(["predict", path, png_writer(tmp_path / "x.png")], capsys)
    assert_one_line_error(code, err, path, "--allow-download")
    _, calls = hub
    assert calls == []  # nothing was fetched
