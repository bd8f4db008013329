"""The web app's figures for the README: server start, first image, frame-change latency (idle and
while a propagation runs) and memory, measured in Chromium driven by Playwright; optionally the
README's screenshot, from the generated clip only (never from a licensed clip).

    python benchmarks/bench_web.py                          # the generated clip
    python benchmarks/bench_web.py --data ../shared/data/endoscapes_v4
    python benchmarks/bench_web.py --screenshot docs/web.png

Needs the project's environment (``make env``; run it with ``.venv/bin/python``) and Debian's
Chromium (``apt-get install chromium``). Tracking uses the weight-free flow engine in the app's
local tracking server, so no checkpoint is needed. Frame changes are timed alternately forward and
back through the clip, from setting the page's frame until the server confirmed it and the next
image of the view arrived (``Testing/Python/web/driver.py``: ``frameChangeMs``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))


def _clip(data: Path | None, folder: Path) -> tuple[Path, list[tuple[float, float]]]:
    """``(video, clicks)``: the clip and one click per object on frame 0."""
    if data is not None:
        prompts = json.loads((data / "prompts.json").read_text())
        clicks = []
        for obj in prompts["objects"]:
            prompt = next(p for p in obj["prompts"] if p["frame"] == 0)
            if prompt.get("points"):
                clicks.append(tuple(map(float, prompt["points"][0])))
            else:
                x0, y0, x1, y1 = prompt["box"]
                clicks.append(((x0 + x1) / 2, (y0 + y1) / 2))
        return data / "video.mp4", clicks
    from PIL import Image
    from sam2sapp.demo import generated_clip

    frames, _prompts, truth = generated_clip(folder, num_frames=90)
    labels = np.array(Image.open(sorted(truth.iterdir())[0]))
    return frames, [tuple(np.argwhere(labels == k).mean(0)[::-1]) for k in (1, 2)]


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (
        f"median {statistics.median(values):4.0f}  p90 {p90:4.0f}  max {max(values):4.0f}  (n={len(values)}: "
        + " ".join(f"{v:.0f}" for v in values)
        + ")"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a clip folder with video.mp4 and prompts.json (default: generated)")
    parser.add_argument("--screenshot", type=Path, help="write the README screenshot here (generated clip only)")
    parser.add_argument("--changes", type=int, default=20, help="frame changes timed in each condition")
    parser.add_argument("--viewport", default="1400x850", help="browser window, WIDTHxHEIGHT")
    args = parser.parse_args()
    if args.screenshot is not None and args.data is not None:
        parser.error("--screenshot is made from the generated clip only (never from a licensed clip): drop --data")

    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python" / "web"))
    from driver import (  # the page driver of the browser tests (Playwright; no pytest)
        WebAppProcess,
        frameChangeMs,
        launchChromium,
        promptPixel,
        state,
        waitState,
    )

    width, height = (int(v) for v in args.viewport.split("x"))
    data = args.data.resolve() if args.data is not None else None
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        video, clicks = _clip(data, Path(tmp))
        app = WebAppProcess(["--port", "0", "--engine", "flow", "--allow-path", str(video.parent)], cwd=tmp)
        memoryStart = app.memoryMb()
        try:
            with sync_playwright() as p:
                browser = launchChromium(p)
                page = browser.new_page(viewport={"width": width, "height": height})
                started = time.monotonic()
                page.goto(app.url)
                page.wait_for_selector("#sam2s-view img", timeout=60000)
                waitState(page, "s.get('status') !== undefined")
                firstImage = time.monotonic() - started

                page.fill("#sam2s-path", str(video))
                started = time.monotonic()
                page.click("#sam2s-open")
                waitState(page, "s.get('video_loaded') === true", timeout=300)
                opened = time.monotonic() - started
                frames = state(page, "frame_count")
                for i, (x, y) in enumerate(clicks):
                    if i:
                        page.click("#sam2s-add-segment")
                        waitState(page, f"s.get('segments').length === {i + 1}")
                    promptPixel(page, x, y, timeout=300)
                targets = [(k * 7 + 3) % frames for k in range(args.changes)]
                idle = [frameChangeMs(page, t) for t in targets]

                # A propagation of every object over the whole clip; frame changes while it runs.
                page.evaluate("window.trame.state.set('frame', 0); window.trame.state.set('scope', 'all')")
                waitState(page, "s.get('shown_frame') === 0")
                started = time.monotonic()
                page.click("#sam2s-propagate")
                waitState(page, "s.get('running') === true", timeout=60)
                busy = []
                for t in targets:
                    if not state(page, "running"):
                        break
                    busy.append(frameChangeMs(page, t))
                waitState(page, "s.get('running') === false", timeout=1800)
                tracked = time.monotonic() - started
                status = state(page, "status")
                memoryEnd = app.memoryMb()
                if args.screenshot is not None:
                    frameChangeMs(page, frames // 5)
                    time.sleep(1.0)
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screenshot))
                browser.close()
        finally:
            code = app.stop()
    print(f"clip: {'generated' if args.data is None else video} ({frames} frames), viewport {args.viewport}")
    print(f"server start to ready:          {app.readySeconds:5.1f} s")
    print(f"page load to first image:       {firstImage:5.1f} s")
    print(f"open the clip:                  {opened:5.1f} s")
    print(f"frame change, idle (ms):        {_summary(idle)}")
    print(f"frame change, tracking (ms):    {_summary(busy) if busy else 'tracking ended first'}")
    print(f"propagation of {len(clicks)} objects:       {tracked:5.1f} s ({status})")
    print(f"memory, app + tracking server:  {memoryStart:5.0f} MB at start, {memoryEnd:5.0f} MB after tracking")
    print(f"exit code after SIGTERM:        {code}")
    if args.screenshot is not None:
        print(f"screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
