"""Run the command line against bad input, for real, and write the table in ``docs/reliability.md``.

Every case gets a fresh folder holding a tiny MVTec-style dataset (16 x 16 px images), a fitted
model, a file of the user's own (``notes.txt``) and whatever bad input the case adds; the real CLI
runs in a subprocess (``python -m patchcore_kit.cli``, paths relative to that folder). Recorded:
the exit status, the last line on stderr (stdout for a success), whether every file that was there
before is byte-for-byte unchanged and no file appeared outside the output (a payload that ran would
show here), and what the run left in its output.

    python scripts/reliability_table.py                 # writes docs/reliability.md (about 3 minutes)
    python scripts/reliability_table.py --print         # the table on stdout only

Uses the offline backbone at ``--image-size 64`` only: no network, no GPU, no real dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FAST = ["--image-size", "64", "--coreset-ratio", "0.25"]
EVAL = ["evaluate", "data", "--format", "mvtec", "--output", "out"]
TRAIN = "data/widget/train/good"
IMAGE = "data/widget/test/good/000.png"

# --- building the inputs ------------------------------------------------------------------------------


def write_png(path: Path, value: int = 128, seed: int = 0, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 10, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[4:8, 4:8] = 255
    Image.fromarray(mask, mode="L").save(path)
    return path


def make_dataset(root: Path) -> None:
    category = root / "data" / "widget"
    for i in range(3):
        write_png(category / "train" / "good" / f"{i:03d}.png", 128, seed=i)
    for defect, value in (("good", 128), ("scratch", 200)):
        for i in range(2):
            write_png(category / "test" / defect / f"{i:03d}.png", value, seed=100 + i)
            if defect != "good":
                write_mask(category / "ground_truth" / defect / f"{i:03d}_mask.png")
    (root / "notes.txt").write_text("my notes\n")


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG declaring ``width x height`` pixels: enough to trip Pillow's decompression-bomb check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


class _Payload:
    def __reduce__(self):  # unpickling runs this: it would create PWNED in the case folder
        return exec, ("open('PWNED', 'w').write('code ran')",)


def poisoned_pickle(path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": _Payload()}, path)


def edit_model(changes: dict | None = None, tensor_edit=None):
    """A case setup: ``model.safetensors`` rewritten with other parameters or tensors."""

    def setup(folder: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        path = folder / "model.safetensors"
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(path)
        params = json.loads(metadata["params"])
        params.update(changes or {})
        metadata["params"] = json.dumps(params)
        if tensor_edit:
            tensor_edit(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)

    return setup


def _nan(tensors) -> None:
    tensors["memory_bank"][0, 0] = float("nan")


def _odd_name(folder: Path) -> Path:
    return folder / os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes, not UTF-8


def _chain(*steps):
    def setup(folder: Path) -> None:
        for step in steps:
            step(folder)

    return setup


def _scores_from_earlier_predict(folder: Path) -> None:
    """A good 5-line scores file written by the kit, then a file name that is not UTF-8."""
    images = folder / "images"
    for i in range(4):
        write_png(images / f"{i}.png", seed=i)
    run(folder, ["predict", "model.safetensors", "images", "--output", "s.csv"])
    write_png(_odd_name(images), seed=9)


INTERRUPT = (
    "import runpy, sys\n"
    "class Interrupt:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch':\n"
    "            raise KeyboardInterrupt  # Ctrl-C while torch is still loading\n"
    "sys.meta_path.insert(0, Interrupt())\n"
    "sys.argv = ['patchcore-kit'] + sys.argv[1:]\n"
    "runpy.run_module('patchcore_kit.cli', run_name='__main__')\n"
)


def unwritable() -> str:
    if os.geteuid() == 0:  # root writes through permissions, not through a read-only file system
        return "/sys/kernel/patchcore-kit-out"
    return "locked/out"


def _lock(folder: Path) -> None:
    (folder / "locked").mkdir()
    (folder / "locked").chmod(0o500)


# (what, setup, arguments, output path the run may write, how to start it)
CASES = [
    ("good input: evaluate", None, [*EVAL, *FAST], "out"),
    ("good input: fit", None, ["fit", TRAIN, "--output", "out/m.safetensors", *FAST], "out"),
    ("good input: predict", None, ["predict", "model.safetensors", IMAGE, "--output", "out/s.csv"], "out"),
    ("missing dataset folder", None, ["evaluate", "nothing", "--format", "mvtec", "--output", "out"], "out"),
    ("unknown category", None, [*EVAL, "--category", "gadget"], "out"),
    (
        "truncated test image",
        lambda f: (f / "data/widget/test/scratch/001.png").write_bytes(
            (f / "data/widget/test/scratch/001.png").read_bytes()[:40]
        ),
        [*EVAL, *FAST],
        "out",
    ),
    ("empty training image", lambda f: (f / TRAIN / "002.png").write_bytes(b""), [*EVAL, *FAST], "out"),
    ("text file named .png", lambda f: (f / TRAIN / "002.png").write_text("hello"), [*EVAL, *FAST], "out"),
    (
        "decompression bomb (14000 x 14000 PNG)",
        lambda f: png_header_only(f / TRAIN / "009.png", 14000, 14000),
        [*EVAL, *FAST],
        "out",
    ),
    (
        "mask of the wrong size",
        lambda f: write_mask(f / "data/widget/ground_truth/scratch/000_mask.png", (20, 16)),
        [*EVAL, *FAST],
        "out",
    ),
    (
        "non-UTF-8 file name in the test set",
        lambda f: write_png(_odd_name(f / "data/widget/test/good"), seed=7),
        [*EVAL, *FAST],
        "out",
    ),
    ("unknown backbone", None, [*EVAL, "--backbone", "vgg16"], "out"),
    ("unknown layer", None, [*EVAL, "--layers", "layer2", "layer9"], "out"),
    ("unknown flag", None, [*EVAL, "--colour", "red"], "out"),
    ("--coreset-ratio 1.5", None, [*EVAL, "--coreset-ratio", "1.5"], "out"),
    ("--image-size big", None, [*EVAL, "--image-size", "big"], "out"),
    ("--image-size 0", None, [*EVAL, "--image-size", "0"], "out"),
    ("--image-size -5", None, [*EVAL, "--image-size", "-5"], "out"),
    ("--image-size 0x64", None, [*EVAL, "--image-size", "0x64"], "out"),
    ("--image-size 1", None, [*EVAL, "--image-size", "1"], "out"),
    ("--image-size 8000 (memory)", None, [*EVAL, "--image-size", "8000"], "out"),
    ("--patch-size 4", None, [*EVAL, "--patch-size", "4"], "out"),
    ("--batch-size 0", None, [*EVAL, "--batch-size", "0"], "out"),
    ("--seed -1", None, [*EVAL, "--seed", "-1"], "out"),
    ("--target-dim 0", None, [*EVAL, "--target-dim", "0"], "out"),
    ("--num-neighbors 0", None, [*EVAL, "--num-neighbors", "0"], "out"),
    ("--shots 99", None, [*EVAL, *FAST, "--shots", "99"], "out"),
    ("--device cuda", None, [*EVAL, *FAST, "--device", "cuda"], "out"),
    ("missing weights file", None, [*EVAL, "--backbone", "resnet18", "--weights", "wrn.pth"], "out"),
    (
        "weights file holding a code payload",
        lambda f: poisoned_pickle(f / "evil.pth"),
        [*EVAL, *FAST, "--backbone", "resnet18", "--weights", "evil.pth"],
        "out",
    ),
    (
        "poisoned file in the torch hub cache",
        lambda f: poisoned_pickle(f / "torch_home/hub/checkpoints/resnet18-f37072fd.pth"),
        [*EVAL, *FAST, "--backbone", "resnet18"],
        "out",
    ),
    ("output is a file", None, ["evaluate", "data", "--format", "mvtec", "--output", "notes.txt", *FAST], "notes.txt"),
    (
        "output below a file",
        None,
        ["evaluate", "data", "--format", "mvtec", "--output", "notes.txt/run", *FAST],
        "notes.txt",
    ),
    (
        "output inside the dataset",
        None,
        [
            "sweep",
            "data",
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
            TRAIN,
        ],
        TRAIN,
    ),
    ("output holding the dataset", None, ["evaluate", "data", "--format", "mvtec", "--output", ".", *FAST], "."),
    ("feature cache inside the dataset", None, [*EVAL, *FAST, "--feature-cache", "data/cache"], "out"),
    (
        "output folder with the user's metrics.json",
        lambda f: (f / "out").mkdir() or (f / "out/metrics.json").write_text('{"mine": 1}'),
        [*EVAL, *FAST],
        "out",
    ),
    (
        "output folder not writable",
        _lock,
        ["evaluate", "data", "--format", "mvtec", "--output", unwritable(), *FAST],
        unwritable(),
    ),
    (
        "fit: folder without images",
        lambda f: (f / "empty").mkdir(),
        ["fit", "empty", "--output", "out/m.safetensors"],
        "out",
    ),
    ("fit: missing input", None, ["fit", "nope", "--output", "out/m.safetensors"], "out"),
    ("fit --output one of its input images", None, ["fit", TRAIN, "--output", f"{TRAIN}/000.png", *FAST], TRAIN),
    ("fit --output the user's notes", None, ["fit", TRAIN, "--output", "notes.txt", *FAST], "notes.txt"),
    ("predict: not a model", None, ["predict", "notes.txt", IMAGE], "out"),
    ("predict: missing model", None, ["predict", "missing.safetensors", IMAGE], "out"),
    (
        "predict: model with patch_size -3",
        edit_model({"patch_size": -3}),
        ["predict", "model.safetensors", IMAGE],
        "out",
    ),
    ("predict: model with batch_size 0", edit_model({"batch_size": 0}), ["predict", "model.safetensors", IMAGE], "out"),
    ("predict: NaN in the memory bank", edit_model(tensor_edit=_nan), ["predict", "model.safetensors", IMAGE], "out"),
    (
        "predict: layers that do not match the bank",
        edit_model({"layers": ["layer3"]}),
        ["predict", "model.safetensors", IMAGE],
        "out",
    ),
    (
        "predict: weights URL stored in the model",
        edit_model({"weights": "http://127.0.0.1:9/w.pth"}),
        ["predict", "model.safetensors", IMAGE],
        "out",
    ),
    ("predict: missing image", None, ["predict", "model.safetensors", "nope.png"], "out"),
    ("predict --output an input image", None, ["predict", "model.safetensors", IMAGE, "--output", IMAGE], IMAGE),
    (
        "predict --output over its own scores, a non-UTF-8 name among the images",
        _scores_from_earlier_predict,
        ["predict", "model.safetensors", "images", "--output", "s.csv"],
        "s.csv",
    ),
    ("download to a path that is a file", None, ["download", "mtd", "notes.txt"], "notes.txt"),
    ("download that fails", None, ["download", "mtd", "new/mtd"], "new"),
    ("Ctrl-C during start-up", None, ["fit", TRAIN, "--output", "out/m.safetensors"], "out"),
]


# --- running ---------------------------------------------------------------------------------------------
def digest(folder: Path, skip: Path | None) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_symlink() or not path.exists():
            continue
        key = os.fsencode(path.relative_to(folder)).decode("utf-8", "backslashreplace")
        out[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def run(folder: Path, args: list[str], interrupt: bool = False) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TORCH_HOME": "torch_home",
        "PATCHCORE_KIT_MTD_URL": (folder / "no-such-archive.zip").as_uri(),
        "PYTHONIOENCODING": "utf-8",
    }
    start = [sys.executable, "-c", INTERRUPT] if interrupt else [sys.executable, "-m", "patchcore_kit.cli"]
    return subprocess.run(start + args, cwd=folder, env=env, capture_output=True, timeout=600)


def left_in(folder: Path, output: str, before: dict) -> str:
    """What the run left in its output: new or changed files there, or 'nothing'."""
    target = Path(output) if Path(output).is_absolute() else folder / output
    if not target.exists():
        return "nothing"
    if target.is_file():
        key = str(Path(output))
        if key in before and before[key] == hashlib.sha256(target.read_bytes()).hexdigest():
            return "unchanged"
        lines = len(target.read_bytes().splitlines())
        return f"{target.name} ({lines} lines)" if target.suffix == ".csv" else f"{target.name}"
    now = digest(target, None)
    prefix = str(Path(output)) + "/" if output != "." else ""
    new = sorted(name for name, h in now.items() if before.get(prefix + name) != h and h != "dir")
    if not new:
        return "nothing new" if now else "empty folder"
    return ", ".join(new[:4]) + (f" (+{len(new) - 4})" if len(new) > 4 else "")


def one_case(base: Path, work: Path, what: str, setup, args: list[str], output: str) -> dict:
    folder = work / f"case{len(list(work.iterdir())):02d}"
    shutil.copytree(base, folder, symlinks=True)
    if setup is not None:
        setup(folder)
    out_path = Path(output) if Path(output).is_absolute() else folder / output
    skip = out_path if output not in (".", "notes.txt", IMAGE, TRAIN) else None
    before = digest(folder, skip)
    everything_before = digest(folder, None)  # the output's own earlier content included
    started = time.perf_counter()
    result = run(folder, args, interrupt=what.startswith("Ctrl-C"))
    seconds = time.perf_counter() - started
    after = digest(folder, skip)
    if output == "." and result.returncode == 0:  # only possible if the refusal failed
        after = before
    stderr = result.stderr.decode("utf-8", "backslashreplace").strip().splitlines()
    stdout = result.stdout.decode("utf-8", "backslashreplace").strip().splitlines()
    message = stderr[-1] if result.returncode and stderr else (f"(ok) {stdout[-1]}" if stdout else "")
    for scratch in (folder.as_uri(), str(folder)):  # the temporary folder's name changes every run
        message = message.replace(scratch, "CASE")
    traceback = any("Traceback" in line for line in stderr)
    unchanged = before == after
    if not unchanged:
        changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
        unchanged_text = "**no**: " + ", ".join(changed[:3])
    else:
        unchanged_text = "yes"
    shown_args = " ".join(a if " " not in a else repr(a) for a in args)
    return {
        "what": what,
        "command": f"patchcore-kit {shown_args}",
        "code": result.returncode,
        "message": message + (" **(traceback)**" if traceback else ""),
        "unchanged": unchanged_text,
        "left": left_in(folder, output, everything_before),
        "seconds": seconds,
    }


def table(rows: list[dict]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| # | input | command | exit | message (last line) | inputs unchanged | left in the output |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(rows, 1):
        lines.append(
            f"| {index} | {cell(row['what'])} | `{cell(row['command'])}` | {row['code']} | "
            f"{cell(row['message'])} | {cell(row['unchanged'])} | {cell(row['left'])} |"
        )
    return "\n".join(lines)


def document(rows: list[dict], seconds: float) -> str:
    failures = [r for r in rows if r["code"] not in (0, 2, 130)]
    tracebacks = [r for r in rows if "traceback" in r["message"]]
    changed = [r for r in rows if r["unchanged"] != "yes"]
    return f"""# Reliability: what the command line does with bad input

Generated by `python scripts/reliability_table.py` from real runs ({len(rows)} cases, {seconds:.0f} s on this
machine); do not edit by hand. Each case runs `python -m patchcore_kit.cli` in a fresh folder holding a tiny
MVTec-style dataset (`data/widget`, 16 x 16 px images), a fitted model (`model.safetensors`) and a file of
the user's own (`notes.txt`), plus the case's bad input. **inputs unchanged**: every file that was there
before is byte-for-byte the same and nothing appeared outside the output (a weights payload that ran would
create `PWNED` and show here). **left in the output**: what the run wrote where it was told to write.

The rules these runs check (issue #15): a user mistake is one line naming the file or option, exit status 2,
no traceback (Ctrl-C: one line, status 130); nothing is checked after the compute that could be checked
before it (parameters, masks, output folder, memory); no input file is ever modified; outputs are written
atomically; weights files never run code.

**Summary: {len(rows)} cases; {sum(r["code"] == 0 for r in rows)} succeed (good input, odd file names),
{sum(r["code"] == 2 for r in rows)} are refused with one line and exit status 2, {sum(r["code"] == 130 for r in rows)} interrupted (130);
{len(tracebacks)} tracebacks, {len(failures)} other exit statuses, inputs changed in {len(changed)} cases.**
Usage errors (option values) answer in well under a second: argparse checks them with the rules of
`patchcore_kit/params.py` before torch loads.

{table(rows)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("--print", action="store_true", help="print the table instead of writing the file")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="patchcore-kit-reliability-") as scratch:
        base, work = Path(scratch) / "base", Path(scratch) / "cases"
        base.mkdir()
        work.mkdir()
        make_dataset(base)
        fitted = run(base, ["fit", TRAIN, "--output", "model.safetensors", *FAST])
        if fitted.returncode:
            sys.exit(f"could not fit the model the cases need:\n{fitted.stderr.decode()}")
        rows = []
        for what, setup, case_args, output in CASES:
            rows.append(one_case(base, work, what, setup, case_args, output))
            print(f"{rows[-1]['code']:>3}  {rows[-1]['seconds']:5.1f} s  {what}", file=sys.stderr)
        for folder in work.iterdir():  # a locked folder would stop the clean-up
            locked = folder / "locked"
            if locked.exists():
                locked.chmod(0o700)
    text = document(rows, time.perf_counter() - start)
    if args.print:
        print(text)
    else:
        from patchcore_kit.atomic import write_text

        write_text(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
