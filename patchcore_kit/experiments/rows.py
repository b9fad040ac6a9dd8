"""The sweep's rows and files: a scored cell measured into its row, rows appended as they finish,
rows of an earlier run read back to resume, and the JSON summary of settings and timings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import write_text
from ..errors import InputError
from ..evaluate import Scored
from .grid import COLUMNS


def measured(scored: Scored) -> dict:
    """A scored cell's metrics and seconds (no per-defect table): the measured part of its row."""
    result = scored.measure(per_defect=False)
    return {**result.metrics, "fit_s": result.seconds["fit"], "infer_s": result.seconds["infer"]}


def _read_done_rows(results_path: Path | None, summary_path: Path | None, settings: dict) -> dict:
    """Rows of an earlier (perhaps interrupted) run of the same sweep, keyed by (method, shots, seed)."""
    if results_path is None or not results_path.is_file() or results_path.stat().st_size == 0:
        return {}
    if summary_path is not None and summary_path.is_file():
        earlier = json.loads(summary_path.read_text()).get("settings")
        if earlier is not None and earlier != settings:
            changed = sorted(k for k in settings if earlier.get(k) != settings[k])
            raise InputError(
                f"{results_path}: holds a sweep with other settings ({', '.join(changed)} differ); "
                f"choose another results path"
            )
    text = results_path.read_text()
    if not text.endswith("\n"):  # a row cut short by the interruption: drop it, it is redone
        text = text[: text.rfind("\n") + 1]
        write_text(results_path, text)
    try:
        table = pd.read_csv(results_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{results_path}: not a readable sweep results file ({error})") from None
    missing = [c for c in COLUMNS if c not in table.columns and c != "full"]  # "full" is derived again
    if missing:
        raise InputError(f"{results_path}: not a sweep results file (missing columns {missing})")
    table = table.astype({"shots": int, "seed": int}).replace({np.nan: None})
    return {(r["method"], r["shots"], r["seed"]): {c: r.get(c) for c in COLUMNS} for r in table.to_dict("records")}


def _earlier_runs(summary_path: Path | None) -> list[dict]:
    """What earlier runs of a resumed sweep recorded (their time and feature pass), oldest first."""
    if summary_path is None or not summary_path.is_file():
        return []
    earlier = json.loads(summary_path.read_text())
    keep = {k: earlier[k] for k in ("status", "elapsed_s", "rows_resumed", "feature_pass") if k in earlier}
    return earlier.get("earlier_runs", []) + [keep]


def _append_row(path: Path | None, row: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
        handle.flush()


def _write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
