"""Writing output files so that a crash never leaves a half-written file in place of a good one.

Every file the kit writes (CSV, JSON, figures, models, the report page) goes through
:func:`atomic_path`: the content is written to a temporary file in the same folder, flushed to
disk, and only then renamed over the target (``os.replace`` is atomic on one file system). A crash,
a full disk or Ctrl-C in between leaves the old file untouched and removes the temporary one.

File names may hold any bytes the OS allows, not only UTF-8: Python carries undecodable bytes as
"surrogate escapes", and :func:`open_text` writes them back as the same bytes, so a path written to
a CSV file names the very file it came from.

>>> with open_text("scores.csv") as handle:          # doctest: +SKIP
...     handle.write("path,score\\n")
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Text encoding of every file the kit writes; "surrogateescape" writes undecodable file-name
#: bytes back unchanged instead of failing half way through the file.
ENCODING, ERRORS = "utf-8", "surrogateescape"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (``safetensors.save_file``, ``Figure.savefig``). The result
    gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask), not the
    private 0600 of a temporary file.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        with open(partial, "rb+") as written:  # flush to disk before the rename makes it visible
            os.fsync(written.fileno())
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def open_text(path: str | Path, newline: str | None = None):
    """``open(path, "w")`` for text, written atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as partial, open(partial, "w", encoding=ENCODING, errors=ERRORS, newline=newline) as handle:
        yield handle


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with open_text(path) as handle:
        handle.write(text)
    return Path(path)


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """A CSV file with a header row, written atomically; paths keep their exact bytes."""
    import csv

    with open_text(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or (list(rows[0]) if rows else ["path"]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def save_figure(figure, path: str | Path, **savefig_kwargs) -> Path:
    """``figure.savefig`` atomically; the format comes from ``path``'s suffix."""
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as partial:
        figure.savefig(partial, **savefig_kwargs)
    return path


def display(path: str | Path) -> str:
    """``path`` as printable text: undecodable bytes shown as ``\\xff`` instead of failing to print."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")
