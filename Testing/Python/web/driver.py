"""Drive ``sam2s web`` from Python: start it as a process, open it in Chromium with Playwright, click
on video pixels, read what the view shows, time frame changes.

Used by the browser tests (``Testing/Python/web/``) and by ``benchmarks/bench_web.py`` (the README's
figures and screenshot); useful for scripted demos too. Needs ``pip install -e ".[web,webtest]"``
and a Chromium (Debian: ``apt-get install chromium``; Playwright's own browser download also works).

Page coordinates come from the app itself (its ``sam2s_view_of_pixel`` trigger), so clicks land on
the intended video pixel whatever the window size: video pixels are ``(x right, y down)`` of the
shown frame.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "OVERLAY_DIFFERENCE",
    "WebAppProcess",
    "clickPixel",
    "frameChangeMs",
    "launchChromium",
    "overlayMask",
    "promptPixel",
    "state",
    "viewImage",
    "waitViewQuiet",
    "waitState",
]

CHROMIUM = os.environ.get("SAM2S_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium (``apt-get install chromium``); ``$SAM2S_CHROMIUM`` picks another."""
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""Headless Chromium on a machine without network or GPU (the background services would only try
to reach Google's hosts)."""
READY = re.compile(r"^sam2s web: (http://\S+) \(ready in ([0-9.]+) s\)")
OVERLAY_DIFFERENCE = 40
"""Summed ``|R|+|G|+|B|`` difference above which a view pixel counts as drawn over by a mask
(the segment fill is 50 % opaque; the same image encodes to the same JPEG, so unmasked pixels
differ by 0)."""


class WebAppProcess:
    """``python -m sam2sapp web ARGS`` in ``cwd``, until it prints its ready line.

    Attributes:
        url: the page's address. readySeconds: process start to ready line (s). lines: its output.

    Raises:
        RuntimeError: it exited or was not ready within ``timeout`` seconds (with its output's end).
    """

    def __init__(self, args: Sequence[str], cwd: str | Path, env: dict | None = None, timeout: float = 120) -> None:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sam2sapp", "web", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self.readySeconds = float("nan")
        deadline = started + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = READY.match(line.strip())
            if match:
                self.url, self.readySeconds = match.group(1), time.monotonic() - started
                break
        if self.url is None:
            self.stop()
            raise RuntimeError("sam2s web did not start:\n" + "".join(self.lines[-40:]))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def children(self) -> list[int]:
        """Process ids of its child processes (the local tracking server); Linux (``pgrep``)."""
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in found.split()]

    def memoryMb(self) -> float:
        """Resident memory (MB, ``VmRSS``) of the app and its children; Linux."""
        total = 0
        for pid in [self.proc.pid, *self.children()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (SIGKILL after ``timeout`` s); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launchChromium(playwright, executable: str = CHROMIUM):
    """A headless Chromium browser (``playwright.chromium.launch``) with :data:`CHROMIUM_ARGS`."""
    return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))


def state(page, name: str):
    """The app's state variable ``name`` as the page sees it."""
    return page.evaluate(f"window.trame.state.get({name!r})")


def waitState(page, expression: str, timeout: float = 60.0) -> None:
    """Wait until the JavaScript ``expression`` (with ``s`` = the page's trame state) is true.
    Raises Playwright's ``TimeoutError`` after ``timeout`` seconds."""
    page.wait_for_function(
        f"() => {{ const s = window.trame && window.trame.state; return Boolean(s) && ({expression}); }}",
        timeout=timeout * 1000,
    )


def viewImage(page) -> tuple[np.ndarray, dict]:
    """``(image, box)``: a screenshot of the view, ``(H, W, 3)`` uint8 RGB in page pixels, and its
    bounding box on the page (``x``, ``y``, ``width``, ``height``)."""
    from PIL import Image

    box = page.locator("#sam2s-view img").first.bounding_box()
    png = page.screenshot(clip=box)
    return np.array(Image.open(io.BytesIO(png)).convert("RGB")), box


def clickPixel(page, x: float, y: float, shift: bool = False) -> None:
    """Click (Shift+click: a negative point) on video pixel ``(x, y)`` of the shown frame."""
    fx, fy = page.evaluate(f"window.trame.trigger('sam2s_view_of_pixel', [{float(x)}, {float(y)}])")
    box = page.locator("#sam2s-view img").first.bounding_box()
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    if shift:
        page.keyboard.up("Shift")


def promptPixel(page, x: float, y: float, shift: bool = False, timeout: float = 120.0) -> None:
    """:func:`clickPixel`, then wait until the app finished the job it started (``finished_jobs``
    grew) and computed the frame's mask (its status "Frame N updated."). Raises Playwright's
    ``TimeoutError`` (the status then says why, e.g. no segment selected)."""
    before = state(page, "finished_jobs")
    clickPixel(page, x, y, shift)
    waitState(page, f"s.get('finished_jobs') > {before} && /^Frame \\d+ updated/.test(s.get('status'))", timeout)


def waitViewQuiet(page, quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait until the view got no new image for ``quiet`` seconds (at most ``timeout`` s): every
    change the server made before is then on the page."""
    page.evaluate(
        """async ([quietMs, timeoutMs]) => {
            const img = document.querySelector('#sam2s-view img');
            const t0 = performance.now();
            let src = img.src;
            let since = performance.now();
            while (performance.now() - since < quietMs && performance.now() - t0 < timeoutMs) {
                await new Promise((r) => setTimeout(r, 20));
                if (img.src !== src) { src = img.src; since = performance.now(); }
            }
        }""",
        [quiet * 1000, timeout * 1000],
    )


def overlayMask(page, width: int, height: int, settle: float = 0.5, timeout: float = 10.0) -> np.ndarray:
    """``(height, width)`` bool: pixels of the shown ``width`` x ``height`` frame that the view draws
    a mask over. The view is captured with the masks hidden and shown (the page's "Show masks"
    switch, left on), each time after the server confirmed the switch (``masks_shown``) and the view
    then got no new image for ``settle`` s (:func:`waitViewQuiet`); both captures are sampled at each
    video pixel's centre and compared (:data:`OVERLAY_DIFFERENCE`).

    Raises:
        ValueError: part of the frame is outside the view (zoomed in or panned).
    """
    shots = []
    for show in (False, True):
        page.evaluate(f"window.trame.state.set('show_masks', {str(show).lower()})")
        waitState(page, f"s.get('masks_shown') === {str(show).lower()}", timeout)
        waitViewQuiet(page, settle, timeout)
        shots.append(viewImage(page)[0])
    hidden, shown = shots
    (ax, ay), (bx, by) = (
        page.evaluate(f"window.trame.trigger('sam2s_view_of_pixel', [{x}, {y}])")
        for x, y in ((0, 0), (width - 1, height - 1))
    )
    cols = np.round((ax + (bx - ax) * np.arange(width) / (width - 1)) * shown.shape[1]).astype(int)
    rows = np.round((ay + (by - ay) * np.arange(height) / (height - 1)) * shown.shape[0]).astype(int)
    if cols.min() < 0 or cols.max() >= shown.shape[1] or rows.min() < 0 or rows.max() >= shown.shape[0]:
        raise ValueError("Part of the frame is outside the view: reset the view (zoom to fit) first.")
    difference = np.abs(shown.astype(int) - hidden.astype(int)).sum(-1)
    return difference[rows][:, cols] > OVERLAY_DIFFERENCE


def frameChangeMs(page, target: int, timeout: float = 10.0) -> float:
    """Milliseconds from setting the page's ``frame`` to ``target`` until the server confirmed it
    (``shown_frame``) and a new image of the view arrived; ``timeout`` * 1000 when it did not."""
    return page.evaluate(
        """([target, timeoutMs]) => new Promise((resolve) => {
            const img = document.querySelector('#sam2s-view img');
            const state = window.trame.state;
            const t0 = performance.now();
            let loaded = false;
            let done = false;
            let unsubscribe = null;
            const finish = (value) => {
                done = true;
                img.removeEventListener('load', onLoad);
                if (typeof unsubscribe === 'function') unsubscribe();
                resolve(value);
            };
            const check = () => {
                if (!done && loaded && state.get('shown_frame') === target) finish(performance.now() - t0);
            };
            const onLoad = () => { loaded = true; check(); };
            img.addEventListener('load', onLoad);
            unsubscribe = state.addListener(check);
            setTimeout(() => { if (!done) finish(timeoutMs); }, timeoutMs);
            state.set('frame', target);
        })""",
        [int(target), float(timeout) * 1000],
    )
