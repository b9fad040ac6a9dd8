"""Downloads against a local HTTP server on 127.0.0.1: checksums, progress, unsafe archives, re-runs."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from patchcore_kit.data import load_mtd, load_mvtec
from patchcore_kit.data.download import (
    MTD_CLASSES,
    DownloadError,
    download_and_extract,
    download_file,
    download_mtd,
    download_mvtec,
    safe_extract,
)
from patchcore_kit.errors import InputError


# --- a local server -----------------------------------------------------------------------------
class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        if self.path == "/truncated.zip":  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on a free loopback port; yields (base_url, folder, request log)."""
    folder = tmp_path / "www"
    folder.mkdir()
    log: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": log})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _png_bytes(png_writer, tmp_path) -> bytes:
    return png_writer(tmp_path / "scratch" / "tiny.png", (8, 8)).read_bytes()


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _mvtec_files(png: bytes, category: str = "bottle") -> dict[str, bytes]:
    return {
        f"{category}/train/good/000.png": png,
        f"{category}/train/good/001.png": png,
        f"{category}/test/good/000.png": png,
        f"{category}/test/broken/000.png": png,
        f"{category}/ground_truth/broken/000_mask.png": png,
        f"{category}/license.txt": b"CC BY-NC-SA 4.0",
    }


def _everything(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


# --- download + progress + checksum -------------------------------------------------------------
def test_download_extracts_with_checksum_and_progress(server, tmp_path, png_writer, capsys):
    url, www, log = server
    png = _png_bytes(png_writer, tmp_path)
    archive = _tar(www / "bottle.tar.xz", _mvtec_files(png), mode="w:xz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data" / "mvtec"
    out = download_and_extract(f"{url}/bottle.tar.xz", dest, digest, expected=["bottle"])
    assert out == dest
    assert (dest / "bottle" / "train" / "good" / "001.png").read_bytes() == png
    assert sorted(p.name for p in dest.iterdir()) == ["bottle"]  # no archive, no scratch left
    assert load_mvtec(dest, "bottle").summary()["test_anomalous"] == 1
    err = capsys.readouterr().err
    assert "bottle.tar.xz" in err and "100%" in err
    assert log == ["/bottle.tar.xz"]


def test_checksum_mismatch_removes_the_download_and_touches_nothing(server, tmp_path):
    url, www, _ = server
    _zip(www / "data.zip", {"folder/file.txt": b"hello"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("user file")
    with pytest.raises(DownloadError, match="checksum mismatch, expected SHA-256 0{64}"):
        download_and_extract(f"{url}/data.zip", dest, "0" * 64, progress=False)
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]
    assert (dest / "mine.txt").read_text() == "user file"


def test_download_file_verifies_and_reuses(server, tmp_path):
    url, www, log = server
    (www / "blob.bin").write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    target = tmp_path / "blob.bin"
    assert download_file(f"{url}/blob.bin", target, digest, progress=False).read_bytes() == b"payload"
    download_file(f"{url}/blob.bin", target, digest, progress=False)  # verified copy: no request
    assert log == ["/blob.bin"]
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(f"{url}/blob.bin", tmp_path / "other.bin", "f" * 64, progress=False)
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "other.bin.part").exists()


def test_http_errors_and_truncated_downloads_leave_nothing(server, tmp_path):
    url, _, _ = server
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"missing\.zip: download failed"):
        download_and_extract(f"{url}/missing.zip", dest, progress=False)
    with pytest.raises(DownloadError, match="truncated.zip"):
        download_and_extract(f"{url}/truncated.zip", dest, progress=False)
    assert not dest.exists()  # not even the folder it made for the download (issue #15)


# --- unsafe archives ----------------------------------------------------------------------------
def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str, data: bytes = b"evil") -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _unsafe_members(kind: str, outside: Path) -> list:
    """Members of a malicious tar: (TarInfo, data) for files, bare TarInfo for links."""
    return {
        "traversal": [_file("../outside.txt")],
        "absolute": [_file(str(outside))],
        "symlink": [_link("data/link", "../../.."), _file("data/link/outside.txt")],
        "absolute-symlink": [_link("data/link", str(outside.parent)), _file("data/link/outside.txt")],
        "symlink-chain": [_link("a", "."), _link("b", "a/.."), _file("b/outside.txt")],
        "hardlink": [_link("data/hard", "../outside.txt", tarfile.LNKTYPE)],
    }[kind]


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "absolute-symlink", "symlink-chain", "hardlink"])
def test_unsafe_tar_is_refused_and_nothing_escapes(server, tmp_path, kind):
    url, www, _ = server
    with tarfile.open(www / "evil.tar.gz", "w:gz") as tf:
        tf.addfile(*_file("data/ok.txt", b""))
        for member in _unsafe_members(kind, tmp_path / "outside.txt"):
            if isinstance(member, tuple):
                tf.addfile(*member)
            else:
                tf.addfile(member)
    before = _everything(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="unsafe"):
        download_and_extract(f"{url}/evil.tar.gz", dest, progress=False)
    assert not (tmp_path / "outside.txt").exists()
    assert _everything(tmp_path) == before  # not even the destination folder it made (issue #15)


@pytest.mark.parametrize("name", ["../outside.txt", "/tmp/patchcore_kit_outside.txt", "C:/outside.txt"])
def test_unsafe_zip_is_refused(tmp_path, name):
    archive = _zip(tmp_path / "evil.zip", {"ok.txt": b"", name: b"evil"})
    with pytest.raises(DownloadError, match="unsafe member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before the first member is written
    assert not (tmp_path / "outside.txt").exists()


def test_zip_symlink_pointing_outside_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = 0o120777 << 16  # a symlink entry, as `zip --symlinks` writes it
        zf.writestr(info, "../../etc")
    with pytest.raises(DownloadError, match="unsafe link"):
        safe_extract(archive, tmp_path / "out")


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>moved</html>")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        safe_extract(junk, tmp_path / "out")


# --- the two datasets ---------------------------------------------------------------------------
def test_download_mvtec_category_then_rerun_skips(server, tmp_path, png_writer):
    url, www, log = server
    _tar(www / "bottle.tar.xz", _mvtec_files(_png_bytes(png_writer, tmp_path)), mode="w:xz")
    dest = tmp_path / "mvtec"
    assert download_mvtec(dest, ["bottle"], base_url=url, progress=False) == dest
    assert load_mvtec(dest, "bottle").has_masks
    download_mvtec(dest, ["bottle"], base_url=url, progress=False)
    assert log == ["/bottle.tar.xz"]  # the second run found the data and asked for nothing
    with pytest.raises(DownloadError, match="lacks cable"):  # archive named cable, holding bottle
        (www / "cable.tar.xz").write_bytes((www / "bottle.tar.xz").read_bytes())
        download_mvtec(dest, ["cable"], base_url=url, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["bottle"]


def test_download_mvtec_rejects_unknown_categories(tmp_path):
    with pytest.raises(InputError, match="unknown MVTec AD category"):
        download_mvtec(tmp_path, ["bottle", "spaceship"])
    with pytest.raises(InputError, match="^spaceship: unknown"):  # a single name, not its letters
        download_mvtec(tmp_path, "spaceship")
    assert list(tmp_path.iterdir()) == []


def test_download_mtd_from_a_github_style_zip(server, tmp_path, png_writer, monkeypatch):
    url, www, log = server
    png = _png_bytes(png_writer, tmp_path)
    top = "Magnetic-tile-defect-datasets.-cc4eb530b57b9cb7225bf76023873043ffd50655"
    files = {f"{top}/README.md": b"MTD"}
    for number in (10, 40, 900, 950):
        files[f"{top}/MT_Free/Imgs/exp1_num_{number}.jpg"] = png
        files[f"{top}/MT_Free/Imgs/exp1_num_{number}.png"] = png
    for cls in MTD_CLASSES[:4] + MTD_CLASSES[5:]:
        files[f"{top}/{cls}/Imgs/exp1_num_1.jpg"] = png
        files[f"{top}/{cls}/Imgs/exp1_num_1.png"] = png
    _zip(www / "mtd.zip", files)
    monkeypatch.setenv("PATCHCORE_KIT_MTD_URL", f"{url}/mtd.zip")
    dest = tmp_path / "mtd"
    download_mtd(dest, progress=False)
    assert (dest / "MT_Free" / "Imgs" / "exp1_num_900.jpg").is_file()  # the top folder is stripped
    split = load_mtd(dest, seed=0)
    assert len(split.train) == 2 and split.test_labels.sum() == 5
    download_mtd(dest, progress=False)
    assert log == ["/mtd.zip"]
