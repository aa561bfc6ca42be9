"""Headless Chromium and a local static server for the web app's tests (import as `from web_browser import ...`).

The browser is Debian's ``chromium`` driven through ``chromedriver`` (``make test`` installs both; nothing
downloads a browser). Paths come from ``$CHROMIUM`` and ``$CHROMEDRIVER`` when set.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
import time
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this machine refuses.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}  # an iPhone 13-sized viewport


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".webmanifest": "application/manifest+json",
        ".svg": "image/svg+xml",
    }

    def log_message(self, *args):  # quiet
        pass


class StaticServer:
    """A static server of ``folder`` on 127.0.0.1 (any free port), like any a user would run."""

    def __init__(self, folder: str | os.PathLike):
        handler = functools.partial(_Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def browser():
    """A new headless Chromium session (selenium), logging the network (``performance``) and the console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"No {what} at {path}: the web app's tests need Debian's chromium and chromium-driver "
                "(`make browser` installs them), or set $CHROMIUM and $CHROMEDRIVER."
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_for(driver, script: str, timeout: float = 120.0, what: str = ""):
    """Polls ``script`` (a JS expression) until it is truthy; its value. A page reload in between is survived."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = driver.execute_script(f"return {script}")
            if value:
                return value
        time.sleep(0.2)
    with contextlib.suppress(Exception):
        last_error = driver.execute_script("return document.getElementById('status').textContent")
    raise TimeoutError(f"Waited {timeout:.0f} s for {what or script}; the page says: {last_error!r}")


def open_app(driver, url: str, timeout: float = 120.0) -> None:
    """Loads the app and waits until its model is ready (raises with the page's message if it failed).

    On a first visit the page reloads itself once when its service worker takes over (to become
    cross-origin isolated): this waits for that too, so that nothing picked afterwards is lost.
    """
    driver.get(url)
    wait_for(driver, "navigator.serviceWorker.controller !== null && crossOriginIsolated", timeout, "the worker")
    state = wait_for(
        driver,
        "['ready', 'failed'].includes(document.body.dataset.state) && document.body.dataset.state",
        timeout,
        "the model to load",
    )
    if state != "ready":
        raise AssertionError(driver.execute_script("return document.getElementById('status').textContent"))


def requests_sent(driver) -> list[str]:
    """The URLs the page requested since the last call (from the performance log), blob: and data: left out."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("blob:", "data:")):
                urls.append(url)
    return urls
