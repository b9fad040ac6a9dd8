"""Notebook 04's explorer: seconds per update for each control that needs no new fit.

The gallery explorer (``patchcore_kit.widgets.gallery_explorer``) on the notebooks' FAST demo data
(brick, 10 training images at 128 px, 16 test images, calibrated), warmed as notebook 04 warms it:
one fit per coreset ratio (0.01, 0.1, 0.25), the test set scored once per fit. Then each control is
moved through its values, ``--updates`` times, and the time from setting the control's value to its
observer having returned is taken: the new PNG of the gallery and the new metrics table are ready
then (what the browser is sent; the transfer is not counted). The figure printed is the median, as
wall time and as this process's CPU time: on a shared machine the wall time grows with the load
(printed in the header), the CPU time much less.

b, threshold, colour map and defect type need no new fit and no backbone pass; the coreset ratio
picks one of the warmed fits, so it is measured too. The target (issue #14): under 0.2 s each.

Before / after, side by side in this run: each is measured in a fresh process, "before" on the code
of ``--before`` (a git revision, exported with ``git archive``; default: the last commit before the
explorer updated figures in place), "after" on this checkout. Both read the same demo data and the
same feature cache, built in a temporary folder before the first measurement.

    nice -n 19 python benchmarks/bench_widgets.py | tee docs/benchmarks/bench_widgets.txt
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from _common import footer, header, set_threads

HERE = Path(__file__).resolve().parents[1]
BEFORE_REV = "794df56"  # main before issue #14 item 5: every change rebuilt the figure and all metrics
RATIOS = (0.01, 0.1, 0.25)  # notebook 04's
NEIGHBORS = (1, 3, 9)
TARGET_S = 0.2


def child(code: str, updates: int) -> dict:
    """Measure in this process with the package from ``code`` (a checkout's root)."""
    sys.path.insert(0, code)
    import numpy as np

    try:
        from patchcore_kit.lessons import notebook_dataset
    except ImportError:  # the "before" code, from before issue #13 renamed notebook.py to lessons.py
        from patchcore_kit.notebook import notebook_dataset

    import patchcore_kit
    from patchcore_kit.widgets import GalleryState, gallery_explorer

    assert Path(patchcore_kit.__file__).resolve().is_relative_to(Path(code).resolve()), patchcore_kit.__file__
    split = notebook_dataset(None, "mvtec", "brick", fast=True, n_train=10)
    feature_cache = Path(os.environ["PATCHCORE_KIT_DATA"]) / "feature_cache"
    start = time.perf_counter()
    state = GalleryState(split, image_size=128, feature_cache=str(feature_cache), calibrate=True)
    # The keyword was `neighbours` before issue #13's one spelling (the "before" code is older).
    keyword = "num_neighbors" if "num_neighbors" in inspect.signature(gallery_explorer).parameters else "neighbours"
    box = gallery_explorer(state, ratios=RATIOS, **{keyword: NEIGHBORS})
    built = time.perf_counter() - start
    controls = {c.description.split(" (")[0]: c for row in box.children[:-2] for c in row.children}
    picture, table = box.children[-2], box.children[-1]
    cycles = {
        "neighbours b": list(NEIGHBORS),
        "threshold": [0.8, 1.2, 1.5, 1.0],
        "colour map": list(controls["colour map"].options),
        "defect type": list(controls["defect type"].options),
        "coreset ratio": list(RATIOS),
    }
    seconds, cpu_seconds, changed = {}, {}, {}
    for name, values in cycles.items():
        control = controls[name]
        original = control.value
        values = [v for v in values if v != original] + [original]
        times, cpu_times, pictures = [], [], set()
        for step in range(updates):
            begin, cpu_begin = time.perf_counter(), time.process_time()
            control.value = values[step % len(values)]
            times.append(time.perf_counter() - begin)
            cpu_times.append(time.process_time() - cpu_begin)
            pictures.add(bytes(picture.value))
            assert table.value  # the metrics table was rebuilt too
        control.value = original
        seconds[name] = times
        cpu_seconds[name] = cpu_times
        changed[name] = len(pictures)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "distinct_pictures": changed,
        "build_s": built,
        "test_images": len(split.test),
        "defect_types": list(controls["defect type"].options),
        "code": code,
        "mean_map_checksum": float(np.mean(state.result(0.1, 9)[1])),
    }


def measure(code: Path, updates: int, threads: int | None, data: str) -> dict:
    command = [sys.executable, __file__, "--child", str(code), "--updates", str(updates)]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, "PATCHCORE_KIT_DATA": data, "PYTHONPATH": str(code)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:  # show the child's traceback, not just its exit status
        raise SystemExit(f"measuring {code} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export(revision: str, folder: Path) -> Path:
    """The code of ``revision`` as plain files (``git archive``): no worktree, no checkout."""
    archive = subprocess.run(
        ["git", "-C", str(HERE), "archive", revision, "patchcore_kit"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=9, help="updates per control (the median is printed)")
    parser.add_argument("--before", default=BEFORE_REV, help="git revision to compare with ('' for none)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.updates)))
        return
    header("notebook 04's gallery explorer: seconds per update, per control")
    with tempfile.TemporaryDirectory(prefix="bench_widgets_") as scratch:
        data = str(Path(scratch) / "data")
        runs = {}
        if args.before:
            before_code = export(args.before, Path(scratch) / "before")
            runs[f"before ({args.before})"] = measure(before_code, args.updates, args.threads, data)
        runs["after (this checkout)"] = measure(HERE, args.updates, args.threads, data)
    first = next(iter(runs.values()))
    print(
        f"FAST demo brick: {first['test_images']} test images at 128 px, defect types {first['defect_types']}; "
        f"calibrated; {len(RATIOS)} fits warmed; {args.updates} updates per control, median (min-max) in seconds\n"
    )
    names = list(first["seconds"])
    labels = list(runs)
    for kind, title in (
        ("seconds", "wall seconds per update"),
        ("cpu_seconds", "CPU seconds per update (this process)"),
    ):
        print(f"{title}, median (min-max):")
        print(
            f"{'control':<14}"
            + "".join(f"{label:>30}" for label in labels)
            + ("   speed-up" if len(runs) == 2 else "")
            + f"   under {TARGET_S} s"
        )
        for name in names:
            medians = [statistics.median(run[kind][name]) for run in runs.values()]
            cells = "".join(
                f"{m:.3f} ({min(r[kind][name]):.3f}-{max(r[kind][name]):.3f})".rjust(30)
                for m, r in zip(medians, runs.values())
            )
            ratio = f"{medians[0] / medians[-1]:>10.1f}x" if len(runs) == 2 else ""
            print(f"{name:<14}{cells}{ratio}   {'yes' if medians[-1] < TARGET_S else 'NO'}")
        print()
    for label, run in runs.items():
        print(
            f"{label}: state + warm fits + first render {run['build_s']:.1f} s; distinct pictures per control "
            f"{run['distinct_pictures']}; mean map (ratio 0.1) {run['mean_map_checksum']:.6f}"
        )
    footer()


if __name__ == "__main__":
    main()
