"""Where a command may write: one rule for every output, checked before any work starts.

* **Never replace the user's files.** An output folder must be new, empty, or one the kit wrote
  (it holds the :data:`MARKER` file, or only files the kit writes); an output file must be new or
  one the kit wrote (``ours(path)``). ``--overwrite`` lifts this, never for a run's own inputs.
* **Never write into a dataset.** An output (or feature cache) folder inside the dataset folder
  would be read as data by the next run (a figure among the training images); a dataset inside
  the output folder would be mixed with results. Both are refused.
* **Know it can be written before computing.** The nearest existing folder is probed by creating
  (and removing) a temporary file, which also catches read-only file systems and root-owned folders.

Every refusal is an :class:`~patchcore_kit.errors.InputError` naming the path.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .atomic import write_text
from .errors import InputError

#: Written into every output folder the kit creates: later runs may write there again.
MARKER = ".patchcore-kit"
#: What the kit writes into output folders (before the marker existed, a folder holding only these
#: names, whose JSON files carry the kit's "machine" entry, was written by the kit).
KIT_NAMES = {
    "metrics.json",
    "scores.csv",
    "split.csv",
    "results.csv",
    "summary.json",
    "sample_efficiency.png",
    "feature_cache",
    "report.html",
    "metrics.csv",
    "figures",
    "summary.csv",
    "claims.md",
    MARKER,
    "candidates.csv",
    "folds.csv",
    "settings.json",  # patchcore-kit tune
}


def _existing_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above ``path``; a file in the way is refused."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"{folder}: exists and is not a folder")
            return folder
    return Path.cwd()


def check_writable(path: Path) -> None:
    """Raise unless a file can be created in ``path`` (or, if missing, in its nearest existing parent)."""
    folder = _existing_ancestor(path)
    try:
        handle, probe = tempfile.mkstemp(prefix=".patchcore-kit-probe-", dir=folder)
    except OSError as error:
        where = path if folder == path else f"{path} (in {folder})"
        raise InputError(f"{where}: cannot write here ({error.strerror or error})") from None
    os.close(handle)
    os.unlink(probe)


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_apart_from_data(path: Path, datasets: Iterable[Path], what: str = "output folder") -> None:
    """Refuse ``path`` inside a dataset folder, or a dataset folder inside ``path``."""
    here = Path(os.path.abspath(path)).resolve()
    for dataset in datasets:
        data = Path(os.path.abspath(dataset)).resolve()
        if _inside(here, data):
            raise InputError(
                f"{path}: {what} lies inside the dataset {dataset}; the next run would read "
                f"its files as data. Choose a folder outside it"
            )
        if _inside(data, here):
            raise InputError(f"{path}: {what} holds the dataset {dataset}; choose a folder outside it")


def _written_by_kit(folder: Path) -> bool:
    entries = list(folder.iterdir())
    if (folder / MARKER).is_file():
        return True
    if any(entry.name not in KIT_NAMES for entry in entries):
        return False
    for entry in entries:
        if entry.suffix == ".json":
            try:
                if "machine" not in json.loads(entry.read_text()):
                    return False
            except (OSError, ValueError, TypeError):
                return False
    return True


def check_output_folder(path: Path, overwrite: bool = False, datasets: Iterable[Path] = ()) -> Path:
    """Every check on an output folder, before the run: see the module's rules."""
    path = Path(path)
    _existing_ancestor(path)
    check_apart_from_data(path, datasets)
    if path.is_dir() and not overwrite and any(path.iterdir()) and not _written_by_kit(path):
        theirs = sorted(e.name for e in path.iterdir() if e.name not in KIT_NAMES or e.suffix == ".json")[:3]
        raise InputError(
            f"{path}: folder holds files patchcore-kit did not write ({', '.join(theirs)}); "
            f"choose an empty folder or pass --overwrite"
        )
    check_writable(path)
    return path


def claim_output_folder(path: Path) -> Path:
    """Create the output folder and mark it as the kit's (just before the first result is written)."""
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.exists():
        write_text(marker, "written by patchcore-kit; it may replace the files here on a later run\n")
    return path


def check_output_file(
    path: Path,
    ours: Callable[[Path], bool],
    kind: str,
    example: str,
    overwrite: bool = False,
    inputs: Iterable[Path] = (),
) -> Path:
    """An output file: not a folder, not one of the run's inputs, new or the kit's (or ``overwrite``), writable."""
    path = Path(path)
    _existing_ancestor(path.parent)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name like {example}")
    if path.exists():
        target = path.resolve()
        if any(Path(item).resolve() == target for item in inputs):
            raise InputError(f"{path}: is one of this run's inputs; refusing to overwrite it")
        if not overwrite and not ours(path):
            raise InputError(
                f"{path}: exists and is not a {kind} written by patchcore-kit; refusing to overwrite "
                f"it (pass --overwrite to replace it)"
            )
    check_writable(path.parent)
    return path
