"""Downloading MVTec AD and MTD safely: verified, extracted without escaping, never half-made.

:func:`download_and_extract` does the work for both datasets:

1. skip everything when the expected folders are already there;
2. stream the archive to ``<name>.part`` with a progress bar, check its SHA-256 when one is known,
   and only then rename it (a failed check removes the partial file and touches nothing else);
3. check every archive member before it is written: absolute paths, ``..`` components and
   links that could point outside the archive are refused (tar archives also pass through
   Python's own ``filter="data"``);
4. extract into a hidden scratch folder inside ``dest`` and move the finished top-level folders
   into place, so an interrupted run leaves no half-extracted dataset behind (only a hard kill can
   leave a ``.download-*`` scratch folder, safe to delete). Files and folders that already exist
   in ``dest`` are never overwritten.

Example:
    >>> root = download_mtd("data/mtd")                      # doctest: +SKIP
    >>> root = download_mvtec("data/mvtec", ["bottle"])      # doctest: +SKIP

Both datasets have their own licences (MVTec AD: CC BY-NC-SA 4.0; MTD: cite Huang et al. 2020);
downloading them means accepting those terms.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..errors import InputError

# ------------------------------------------------------------------------------------------------
# Where the data lives. MVTec rotates its mydrive.ch share links now and then; when a link dies,
# pass base_url= (or set PATCHCORE_KIT_MVTEC_BASE_URL) to a mirror holding the same file names.
# ------------------------------------------------------------------------------------------------
MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
MVTEC_ARCHIVE = "mvtec_anomaly_detection.tar.xz"
#: Official links (mydrive.ch shares of MVTec), one archive per category plus the full bundle.
MVTEC_URLS = {
    "bottle": "https://www.mydrive.ch/shares/150452/132a93367fb17cdf968dfb5c4013f6e7/download/420937370-1629958698/bottle.tar.xz",
    "cable": "https://www.mydrive.ch/shares/150453/10f960e07fec2838b2cd512586633a32/download/420937413-1629958794/cable.tar.xz",
    "capsule": "https://www.mydrive.ch/shares/150454/e0ce6dd74eb150f46c0d98131b3703f2/download/420937454-1629958872/capsule.tar.xz",
    "carpet": "https://www.mydrive.ch/shares/150455/eac7fbce84d93a5094e13f391170eca4/download/420937484-1629959013/carpet.tar.xz",
    "grid": "https://www.mydrive.ch/shares/150456/bb0b2e3dc804ccb8b4485e01f8e4493b/download/420937487-1629959044/grid.tar.xz",
    "hazelnut": "https://www.mydrive.ch/shares/150457/51d49f65e84bdc100ff8035d7dd783ea/download/420937545-1629959162/hazelnut.tar.xz",
    "leather": "https://www.mydrive.ch/shares/150458/923030ce14e10a7d147e95d0f8885f6b/download/420937607-1629959262/leather.tar.xz",
    "metal_nut": "https://www.mydrive.ch/shares/150459/c68856a21dca589b0f8ff6d4ee0f18f4/download/420937637-1629959294/metal_nut.tar.xz",
    "pill": "https://www.mydrive.ch/shares/150460/d4f1c04da67034ccc8d8b5fa3e73f244/download/420938129-1629960351/pill.tar.xz",
    "screw": "https://www.mydrive.ch/shares/150461/242f454cc6385e5693c4fd4b94567d1e/download/420938130-1629960389/screw.tar.xz",
    "tile": "https://www.mydrive.ch/shares/150462/5479f0fdc97bc6fa16eab0cb0cf0109f/download/420938133-1629960456/tile.tar.xz",
    "toothbrush": "https://www.mydrive.ch/shares/150463/895a1a5fb84b958f07417784b060434b/download/420938134-1629960477/toothbrush.tar.xz",
    "transistor": "https://www.mydrive.ch/shares/150464/99b8ea0332438d64fcc2475ee73f9c29/download/420938166-1629960554/transistor.tar.xz",
    "wood": "https://www.mydrive.ch/shares/150465/d5b4115b720cdb54d217e75636e6e374/download/420938383-1629960649/wood.tar.xz",
    "zipper": "https://www.mydrive.ch/shares/150466/bd155b557520edaf692d9bfdb915c24a/download/420938385-1629960680/zipper.tar.xz",
    "all": "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/420938113-1629960298/mvtec_anomaly_detection.tar.xz",
}  # fmt: skip
#: SHA-256 of the archives. The full bundle (5,264,982,680 bytes) has a widely published checksum;
#: MVTec publishes none for the per-category archives, so those are checked by layout only.
MVTEC_SHA256: dict[str, str | None] = {c: None for c in MVTEC_CATEGORIES}
MVTEC_SHA256["all"] = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"

MTD_COMMIT = "cc4eb530b57b9cb7225bf76023873043ffd50655"
#: GitHub's zip of the MTD repository at a fixed commit: the commit pins the content. GitHub does
#: not promise byte-identical zips over time, so no SHA-256; the layout is checked after extraction.
MTD_URL = f"https://github.com/abin24/Magnetic-tile-defect-datasets./archive/{MTD_COMMIT}.zip"
MTD_CLASSES = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Free", "MT_Uneven")

CHUNK = 1 << 20  # 1 MiB reads keep memory flat for multi-GB archives


class DownloadError(InputError):
    """A download or archive that cannot be used: unreachable, wrong checksum or unsafe contents.

    It is an :class:`InputError` so the command line prints it as a message, not a traceback.
    """


# ------------------------------------------------------------------------------------------------
# Downloading one file
# ------------------------------------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str, path: str | Path, sha256: str | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``path`` via ``<path>.part``; verify ``sha256`` when given.

    An existing ``path`` whose checksum matches is reused. On any failure the ``.part`` file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.is_file() and sha256 is not None and sha256_of(path) == sha256.lower():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "patchcore_kit"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, disable=not progress
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise DownloadError(f"{url}: download interrupted after {received} of {total} bytes")
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DownloadError(
                f"{url}: checksum mismatch, expected SHA-256 {sha256.lower()} but got "
                f"{digest.hexdigest()}; the file was removed"
            )
        os.replace(partial, path)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: download failed ({error})") from None
    except BaseException:  # checksum errors, Ctrl-C: never leave a partial file behind
        partial.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------------
# Safe extraction
# ------------------------------------------------------------------------------------------------
def _check_name(name: str, archive: Path) -> PurePosixPath:
    """Refuse member names that would land outside the extraction folder."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")) or ".." in pure.parts:
        raise DownloadError(f"{archive}: unsafe member {name!r} (absolute path or '..'); extraction refused")
    return pure


def _check_link(name: PurePosixPath, target: str, archive: Path) -> None:
    """Links may only point downwards: no absolute target, no '..'.

    A lexical check of '..' targets is not enough (``a -> .`` then ``b -> a/..`` escapes), while
    links that only go down stay inside by construction. Dataset archives hold no links at all.
    """
    parts = PurePosixPath(target.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or parts[0].endswith(":") or ".." in parts:
        raise DownloadError(f"{archive}: unsafe link {str(name)!r} -> {target!r} may point outside the archive")


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = _check_name(member.name, archive)
    if member.issym() or member.islnk():
        _check_link(name, member.linkname, archive)
    elif not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: unsupported member {member.name!r} (device or fifo)")


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        name = _check_name(info.filename, archive)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink entry
            _check_link(name, zf.read(info).decode("utf-8", "replace"), archive)


def safe_extract(archive: str | Path, folder: str | Path) -> None:
    """Extract a zip or tar ``archive`` into ``folder``, refusing members that would escape it.

    Zip members are all checked before the first one is written. Tar members are checked one by
    one as they stream past (a 5 GB ``.tar.xz`` is then decompressed once, not twice) and also go
    through Python's ``filter="data"``; a refused member stops the extraction, so extract into a
    scratch folder (as :func:`download_and_extract` does) and discard it on error.
    """
    archive, folder = Path(archive), Path(folder)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _check_zip(zf, archive)
            zf.extractall(folder)
        return
    if not tarfile.is_tarfile(archive):
        raise DownloadError(f"{archive}: not a zip or tar archive")
    with tarfile.open(archive) as tf:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and 3.8-3.10 security releases)

            def accept(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
                _check_tar_member(member, archive)
                return tarfile.data_filter(member, path)

            try:
                tf.extractall(folder, filter=accept)
            except tarfile.FilterError as error:
                raise DownloadError(f"{archive}: unsafe member refused ({error})") from None
        else:  # pragma: no cover - older Pythons: check everything first, then extract
            for member in tf.getmembers():
                _check_tar_member(member, archive)
            tf.extractall(folder)


# ------------------------------------------------------------------------------------------------
# Download, verify, extract, move into place
# ------------------------------------------------------------------------------------------------
def download_and_extract(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    *,
    expected: Iterable[str] = (),
    archive_name: str | None = None,
    strip_single_folder: bool = False,
    check: Callable[[Path], None] | None = None,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download the archive at ``url`` and unpack it into ``dest``; return ``dest``.

    ``expected``: top-level names in ``dest`` that mean "already done" (nothing is downloaded
    when all exist). ``strip_single_folder``: when the archive holds one folder only (GitHub
    zips), move its contents instead of the folder. ``check(folder)`` may raise to reject the
    extracted contents before anything is moved into ``dest``.
    """
    dest = Path(dest).expanduser()
    expected = list(expected)
    if expected and all((dest / name).exists() for name in expected):
        return dest
    created = _make_folder(dest)
    # Everything happens in one hidden scratch folder inside dest (same disk, so the final moves
    # are renames); it is removed on success and on error, so no user file is ever touched.
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    except OSError as error:
        _remove_if_empty(created)
        raise DownloadError(f"{dest}: cannot write here ({error.strerror or error})") from None
    moved = False
    try:
        archive = scratch / (archive_name or PurePosixPath(url.split("?")[0]).name or "archive")
        download_file(url, archive, sha256=sha256, progress=progress)
        staging = scratch / "extracted"
        safe_extract(archive, staging)
        content = staging
        entries = list(staging.iterdir())
        if strip_single_folder and len(entries) == 1 and entries[0].is_dir():
            content = entries[0]
        if check is not None:
            check(content)
        for entry in sorted(content.iterdir()):
            target = dest / entry.name
            if not target.exists():  # never overwrite what the user already has
                os.replace(entry, target)
        if keep_archive and not (dest / archive.name).exists():
            os.replace(archive, dest / archive.name)
        moved = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not moved:  # a failed download leaves no empty folder behind either
            _remove_if_empty(created)
    return dest


def _make_folder(dest: Path) -> list[Path]:
    """Create ``dest`` (and missing parents); return the folders created, deepest first.

    A file where a folder should be is a :class:`DownloadError` naming it, not a traceback.
    """
    missing = []
    for folder in (dest, *dest.parents):
        if folder.exists():
            if not folder.is_dir():
                raise DownloadError(f"{folder}: exists and is not a folder; choose another destination")
            break
        missing.append(folder)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"{dest}: cannot create the folder ({error.strerror or error})") from None
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it
            break


def _require_layout(names: Iterable[str], what: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        missing = [name for name in names if not (folder / name).is_dir()]
        if missing:
            raise DownloadError(f"{folder}: the downloaded {what} lacks {', '.join(missing)}; nothing was moved")

    return check


def download_mvtec(
    dest: str | Path, categories: Iterable[str] | None = None, base_url: str | None = None, progress: bool = True
) -> Path:
    """Download MVTec AD into ``dest`` (one folder per category); return ``dest``.

    ``categories=None`` fetches the full 5 GB bundle (checksum-verified); a list fetches only those
    categories' archives. ``base_url`` (or the environment variable
    ``PATCHCORE_KIT_MVTEC_BASE_URL``) replaces the official links by ``<base_url>/<category>.tar.xz``
    and ``<base_url>/mvtec_anomaly_detection.tar.xz``. Categories already present are skipped.
    """
    base_url = base_url or os.environ.get("PATCHCORE_KIT_MVTEC_BASE_URL")
    if isinstance(categories, str):
        categories = [categories]
    wanted = list(MVTEC_CATEGORIES if categories is None else categories)
    unknown = [c for c in wanted if c not in MVTEC_CATEGORIES]
    if unknown:
        choices = ", ".join(MVTEC_CATEGORIES)
        raise InputError(f"{', '.join(unknown)}: unknown MVTec AD category; choose from {choices}")
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{dest}: exists and is not a folder; choose another destination")
    missing = [c for c in wanted if not (dest / c / "train").is_dir()]
    if not missing:
        return dest
    jobs = [("all", MVTEC_ARCHIVE, wanted)] if categories is None else [(c, f"{c}.tar.xz", [c]) for c in missing]
    for key, file_name, expected in jobs:
        url = f"{base_url.rstrip('/')}/{file_name}" if base_url else MVTEC_URLS[key]
        download_and_extract(
            url,
            dest,
            MVTEC_SHA256[key],
            expected=expected,
            archive_name=file_name,
            check=_require_layout(expected, "MVTec AD archive"),
            progress=progress,
        )
    return dest


def download_mtd(dest: str | Path, url: str | None = None, progress: bool = True) -> Path:
    """Download Magnetic Tile Defects into ``dest`` (``dest/MT_Free/Imgs/...``); return ``dest``.

    ``url`` (or ``PATCHCORE_KIT_MTD_URL``) replaces the GitHub archive, e.g. with a local mirror.
    """
    url = url or os.environ.get("PATCHCORE_KIT_MTD_URL") or MTD_URL
    return download_and_extract(
        url,
        dest,
        None,
        expected=MTD_CLASSES,
        archive_name="mtd.zip",
        strip_single_folder=True,
        check=_require_layout(MTD_CLASSES, "MTD archive"),
        progress=progress,
    )
