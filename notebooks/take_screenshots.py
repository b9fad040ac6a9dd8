"""Screenshots of notebooks 02, 04 and 05 as they look in JupyterLab, for the README.

Copies the notebooks into a temporary folder (JupyterLab saves outputs into the files it runs;
the committed notebooks stay clean), starts JupyterLab on 127.0.0.1, opens each notebook with
Debian's Chromium (Playwright, ``/usr/bin/chromium``), runs all cells, scrolls to the explorer
widget and saves a screenshot to ``docs/notebook_02.png``, ``docs/notebook_04.png`` and
``docs/notebook_05.png``.

    .venv/bin/python notebooks/take_screenshots.py          # full settings (slow: minutes)
    .venv/bin/python notebooks/take_screenshots.py --fast   # FAST mode, as in the tests
    .venv/bin/python notebooks/take_screenshots.py --fast 02   # only notebook 02's screenshot

Data (demo, feature cache) go to the usual data folder (``$PATCHCORE_KIT_DATA`` or ``data/``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# notebook -> (screenshot, text of the markdown heading to scroll to, window height)
SHOTS = {
    "02_coreset_umap.ipynb": ("notebook_02.png", "5 · Explore", 1000),
    "04_segmentation_gallery.ipynb": ("notebook_04.png", "6 · Explore", 1500),
    "05_decisions.ipynb": ("notebook_05.png", "4 · The worst misses and false alarms", 1300),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    settings = root / ".lab"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--allow-root",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={settings / 'user'}", f"--LabApp.workspaces_dir={settings / 'workspaces'}",
    ]
    env = {**env, "JUPYTER_RUNTIME_DIR": str(settings / "runtime")}  # nothing written to the home folder
    # Start the notebook's kernel without asking, and no news pop-up over the screenshot.
    for plugin, values in {"notebook-extension/tracker": '{"autoStartDefaultKernel": true}',
                           "apputils-extension/notification": '{"fetchNews": "false"}'}.items():
        path = settings / "user" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(values)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2):
                return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")


def run_and_capture(page, url: str, heading: str, target: Path, timeout_s: int, load_s: int = 120) -> None:
    page.goto(url, wait_until="domcontentloaded", timeout=load_s * 1000)
    page.locator(".jp-Notebook").first.wait_for(timeout=load_s * 1000)
    time.sleep(3)
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
    if select.count():  # a kernel chooser despite the setting: take the notebook's own kernel
        select.first.click()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=load_s * 1000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    time.sleep(2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # idle and no cell waiting: the notebook is done
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        if idle and page.locator(".jp-InputPrompt", has_text="[*]").count() == 0:
            break
        time.sleep(2)
    else:
        raise RuntimeError(f"{url}: still running after {timeout_s} s")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    print(f"{url}: finished ({errors.count()} stderr outputs)")
    page.get_by_role("heading", name=heading).first.scroll_into_view_if_needed()
    page.get_by_role("heading", name=heading).first.evaluate("el => el.scrollIntoView({block: 'start'})")
    time.sleep(3)  # widgets render after the scroll
    page.screenshot(path=str(target))
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="run the notebooks with PATCHCORE_KIT_FAST=1")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per notebook")
    parser.add_argument("--load-timeout", type=int, default=120,
                        help="seconds allowed for JupyterLab to show a notebook and start its kernel (a busy machine needs more)")
    parser.add_argument("notebooks", nargs="*", metavar="NUMBER",
                        help="only these notebooks, by number (e.g. 02); default: all of " + ", ".join(SHOTS))
    args = parser.parse_args()
    shots = {name: shot for name, shot in SHOTS.items() if not args.notebooks or name[:2] in args.notebooks}
    if not shots:
        parser.error(f"no screenshot for notebooks {args.notebooks}; choose from {', '.join(n[:2] for n in SHOTS)}")

    from playwright.sync_api import sync_playwright

    env = {**os.environ, "PATCHCORE_KIT_FAST": "1" if args.fast else "0"}
    env.setdefault("PATCHCORE_KIT_DATA", str(HERE.parent / "data"))
    with tempfile.TemporaryDirectory(prefix="patchcore_kit_screens_") as folder:
        root = Path(folder)
        for name in shots:
            shutil.copy(HERE / name, root / name)
        port = free_port()
        lab = start_lab(root, port, env, root / "lab.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                for name, (png, heading, height) in shots.items():
                    page = browser.new_page(viewport={"width": 1280, "height": height})
                    # /doc/ is JupyterLab's single-document mode: the notebook without side panels
                    run_and_capture(page, f"http://127.0.0.1:{port}/doc/tree/{name}", heading, DOCS / png,
                                    args.timeout, args.load_timeout)
                browser.close()
        finally:
            os.killpg(lab.pid, signal.SIGTERM)
            try:
                lab.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(lab.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
