"""A real browser moves a real widget: Voilà serves a notebook, Debian's Chromium drives it.

The notebook is small and written by the test: tiny demo data and the gallery explorer of
notebook 04 (``patchcore_kit.widgets.gallery_explorer``). Chromium (through Playwright, with the
system's ``/usr/bin/chromium``, never a downloaded browser) waits for the rendered gallery,
moves the threshold slider with the keyboard, and checks that the kernel sends a new picture.
Everything stays on 127.0.0.1; the server is stopped at the end, whatever happens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_S = 60
RENDER_S = 240  # the kernel imports torch and fits three small models before the widget appears
UPDATE_S = 60
# The pixels the browser decoded for an <img>, drawn into a canvas and read back as a PNG data URL
# (element screenshots of a picture taller than the viewport can come back unchanged).
PIXELS_JS = """el => { const c = document.createElement('canvas'); c.width = el.naturalWidth;
c.height = el.naturalHeight; c.getContext('2d').drawImage(el, 0, 0); return c.toDataURL('image/png'); }"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK_CODE = """\
import os
from patchcore_kit.data import load_dataset
from patchcore_kit.data.demo import build_demo_dataset
from patchcore_kit.widgets import GalleryState, gallery_explorer

data = os.environ["PATCHCORE_KIT_DATA"]
root = build_demo_dataset(os.path.join(data, "demo"), categories=("gravel",), n_train=4, n_test_good=2,
                          n_test_per_defect=1, image_size=64, progress=False)
state = GalleryState(load_dataset(root, "mvtec", "gravel"), image_size=64,
                     feature_cache=os.path.join(data, "features"))
gallery_explorer(state, ratios=(0.25, 0.5), num_neighbors=(1, 3))
"""


def _chromium_or_skip() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the browser test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"voila exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # Not the notebook's own URL: a GET there starts a kernel. Any answer means "up".
            with urllib.request.urlopen(url + "voila/api/shutdown", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"voila did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def voila_url(tmp_path):
    """Serve the small notebook with Voilà on 127.0.0.1; yield its URL; stop the server."""
    _chromium_or_skip()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CODE)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "gallery.ipynb"
    nbformat.write(notebook, path)
    port = _free_port()
    env = {**os.environ, "PATCHCORE_KIT_DATA": str(tmp_path / "data")}
    log = tmp_path / "voila.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voila",
                str(path),
                "--no-browser",
                f"--port={port}",
                "--Voila.ip=127.0.0.1",
                "--VoilaExecutor.timeout=300",
                "--show_tracebacks=True",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_server(url, process, log)
        yield url, log
    finally:
        # Voilà and its kernel share the new session: end that group only.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_moving_the_threshold_slider_changes_the_gallery(voila_url):
    from playwright.sync_api import sync_playwright

    url, log = voila_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, timeout=RENDER_S * 1000, wait_until="commit")
            picture = page.locator(".widget-image").first
            try:
                picture.wait_for(state="visible", timeout=RENDER_S * 1000)
            except Exception:
                pytest.fail(f"the gallery never appeared; voila log:\n{log.read_text()[-3000:]}")
            page.wait_for_function("el => el.naturalWidth > 0", arg=picture.element_handle(), timeout=UPDATE_S * 1000)
            before_src = picture.get_attribute("src")
            before_pixels = picture.evaluate(PIXELS_JS)

            slider = page.locator(".widget-slider", has_text="threshold").first
            readout = slider.locator(".widget-readout")
            value_before = readout.inner_text()
            slider.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "([el, old]) => el.src !== old && el.naturalWidth > 0",
                arg=[picture.element_handle(), before_src],
                timeout=UPDATE_S * 1000,
            )
            assert readout.inner_text() != value_before  # the slider really moved
            # ...and the picture the browser decoded shows a different gallery.
            assert picture.evaluate(PIXELS_JS) != before_pixels
        finally:
            browser.close()
