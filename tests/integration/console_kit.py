"""The console's end-to-end kit: `notarium console` as a real process, and the distribution's
Chromium driven by Playwright (Playwright's own browser download is not used: ``executable_path``
points at the system's ``chromium``, which .ci/run installs)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from integration.server import announced, clean_env

CHROMIUM = os.environ.get("NOTARIUM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_URL = re.compile(r"(https?://\S+/login\?token=\S+)")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_ENV = "NOTARIUM_SCREENSHOT"  # set: the tests write docs/images/console.png


@dataclass
class Console:
    login_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.login_url.split("/login?")[0]

    @property
    def token(self) -> str:
        return self.login_url.split("token=")[1]


@contextmanager
def console(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Iterator[Console]:
    """``notarium console ARGS --port 0``, yielded once it printed its login URL; SIGTERM on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "notarium", "console", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean_env(), **(env or {})},
    )
    url, lines = announced(proc, _URL, "the console", timeout)
    handle = Console(url, proc, lines)
    try:
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Dialogs:
    """Records every alert or prompt a page opens (an XSS payload's would be one); confirmations
    (the console asks before removing a user) are accepted."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("dialog", self._on)

    def _on(self, dialog: Dialog) -> None:
        if dialog.type == "confirm":
            dialog.accept()
            return
        self.seen.append(dialog.message)
        dialog.dismiss()


def screenshot_path() -> Path | None:
    """Where to write the README's screenshot, when asked to (``NOTARIUM_SCREENSHOT=1``)."""
    if not os.environ.get(SCREENSHOT_ENV):
        return None
    path = REPO / "docs" / "images" / "console.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
