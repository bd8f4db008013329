"""``sam2s web`` in a real browser: Playwright drives Debian's Chromium (``/usr/bin/chromium``)
against the app started as a subprocess on a free loopback port, on the real clip (the generated
clip without ``../shared``), with the weight-free ``flow`` engine in a local tracking server.

What is checked, from what the browser shows (screenshots of the view compared with the video's
own frames, decoded here with PyAV):

* a click on an object draws its mask there (overlay pixels at the clicked object, few elsewhere);
* after a forward propagation a later frame shows the tracked mask (the overlay matches the
  exported masklet on that frame);
* a frame change during a propagation answers (new frame number and a new image of the view) in
  under 500 ms;
* Cancel midway keeps the finished frames;
* the downloaded .seg.nrrd equals what the headless logic writes for the same prompts;
* on a non-loopback bind, requests without the token are refused (401), HTTP and websocket.

Runs in the project's environment (``make test``, ``.venv``, with the ``[web]`` extra: trame-slicer 2.0.0
needs slicer-core 5.11). Skips only when Chromium or Playwright is missing, saying how to install them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("trame_slicer", reason='the web app needs pip install -e ".[web]" (make env installs it)')
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (sam2s[webtest])")

from driver import (  # noqa: E402 - after the skips above (Testing/Python/web/driver.py)
    CHROMIUM,
    WebAppProcess,
    frameChangeMs,
    launchChromium,
    overlayMask,
    promptPixel,
    state,
    waitState,
)

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------- helpers
def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    with playwright.sync_playwright() as p:
        browser = launchChromium(p)
        yield browser
        browser.close()


@dataclasses.dataclass
class Clip:
    video: Path  # what the page opens by path: a video file, or a folder of frames
    videoFile: Path  # a video file to upload
    firstMask: np.ndarray  # (H, W) bool, object 1 on frame 0 (human mask on the real clip)
    click1: tuple[float, float]  # on object 1, frame 0, video pixels
    click2: tuple[float, float]  # on object 2
    box2: tuple[float, float, float, float]  # around object 2 (x0, y0, x1, y1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Clip:
    """The real clip (read in place), else the generated clip (its frames, and an .mp4 of them)."""
    import json

    from conftest import SHARED_DATA
    from PIL import Image

    if (SHARED_DATA / "video.mp4").is_file():
        mask = np.array(Image.open(SHARED_DATA / "masks" / "00000.png")) == 1
        objects = json.loads((SHARED_DATA / "prompts.json").read_text())["objects"]
        box = tuple(map(float, objects[1]["prompts"][0]["box"]))
        video = SHARED_DATA / "video.mp4"
        return Clip(video, video, mask, (451.0, 137.0), ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), box)
    import av
    from sam2sapp.demo import generated_clip

    folder = tmp_path_factory.mktemp("clip")
    frames, _prompts, truth = generated_clip(folder)
    labels = np.array(Image.open(sorted(truth.iterdir())[0]))
    centres = [tuple(np.argwhere(labels == k).mean(0)[::-1]) for k in (1, 2)]
    rows, cols = np.nonzero(labels == 2)
    mp4 = folder / "clip.mp4"
    with av.open(str(mp4), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = labels.shape[1], labels.shape[0], "yuv420p"
        for path in sorted(frames.iterdir()):
            image = av.VideoFrame.from_ndarray(np.array(Image.open(path).convert("RGB")), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    box = (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))
    return Clip(frames, mp4, labels == 1, centres[0], centres[1], box)


def _readSeg(path: Path):
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    return segmentation["voxels"], segmentation["segments"]


def _segmentMask(voxels: np.ndarray, segment: dict) -> np.ndarray:
    """``(I, J, K)`` = (column, row, frame) bool mask of one segment of a slicerio read (4D when the
    segments are on several layers: ``(layer, I, J, K)``)."""
    layer = voxels[segment.get("layer", 0)] if voxels.ndim == 4 else voxels
    return layer == segment["labelValue"]


def _headlessExport(video: Path, prompts: dict, segments: list[dict], steps: list[tuple], out: Path) -> Path:
    """What the headless logic writes when it is given the web app's prompts (replayed exactly) in
    the order the page gave them: ``steps`` = ``[("prompt", segmentId, frame) | ("track", segmentId,
    first, last), ...]`` (a prompt computes its frame, as a click does; tracking is forward from
    ``first``). ``segments``: the page's segment list (id, name, colour #RRGGBB, object id), created
    in that order."""
    from SAM2SSlicerLib.headless import createTrackingLogic
    from SAM2SSlicerLib.settings import ModelSettings

    logic = createTrackingLogic()
    logic.setModelSettings(ModelSettings(engine="flow"))
    logic.importVideo(str(video))
    logic.createSegmentation()
    ids = {
        segment["id"]: logic.addSegment(
            segment["name"],
            color=[int(segment["color"][i : i + 2], 16) / 255 for i in (1, 3, 5)],
            objectId=segment["objectId"],
        )
        for segment in segments
    }
    for step in steps:
        if step[0] == "prompt":
            _kind, webId, frame = step
            prompt = prompts[webId][str(frame)]
            for (x, y), label in zip(prompt["points"], prompt["labels"]):
                logic.addPointPrompt(ids[webId], frame, x, y, bool(label))
            if prompt["box"]:
                logic.setBoxPrompt(ids[webId], frame, prompt["box"])
            logic.previewFrame(ids[webId], frame)
        else:
            _kind, webId, first, last = step
            logic.track([ids[webId]], first, first, last, "forward")
    path = out / "headless.seg.nrrd"
    logic.exportSegmentation(str(path))
    logic.close()
    return path


# --------------------------------------------------------------------------------------------- tests
def _brightFirstSegment(page) -> None:
    """Give the first segment a fixed, bright colour. slicer-core's scene has no GenericAnatomyColors
    table, so Slicer gives a new segment a random colour, and a dull one (a grey green, say) over this
    tissue differs from the video by less than ``OVERLAY_DIFFERENCE`` in places (IoU 0.5 seen in CI)."""
    waitState(page, "s.get('segments').length === 1")
    page.locator("#sam2s-segments .sam2s-segment-color").nth(0).evaluate(
        "(e) => { e.value = '#ffd000'; e.dispatchEvent(new Event('change')); }"
    )
    waitState(page, "s.get('segments')[0].color === '#ffd000'")


def test_click_propagate_cancel_and_export_in_the_browser(browser, clip, tmp_path):
    video, firstMask, click1, click2 = clip.video, clip.firstMask, clip.click1, clip.click2
    previousFolders = set(Path(tempfile.gettempdir()).glob("sam2s-web-*"))
    server = WebAppProcess(["--port", "0", "--engine", "flow", "--allow-path", str(video.parent)], cwd=tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 850}, accept_downloads=True)
    try:
        start = time.monotonic()
        page.goto(server.url)
        waitState(page, "s.get('status') !== undefined")
        page.wait_for_selector("#sam2s-view img", timeout=30000)
        firstImageSeconds = time.monotonic() - start

        # Open the clip by path.
        page.fill("#sam2s-path", str(video))
        page.click("#sam2s-open")
        waitState(page, "s.get('video_loaded') === true", timeout=120)
        frameCount = state(page, "frame_count")
        height, width = firstMask.shape
        _brightFirstSegment(page)
        time.sleep(1.0)
        assert overlayMask(page, width, height).mean() < 0.01, "no overlay before any prompt"

        # Click on object 1: its mask is drawn there.
        promptPixel(page, *click1)
        time.sleep(1.0)
        drawn = overlayMask(page, width, height)
        x, y = (int(round(v)) for v in click1)
        # Around the clicked pixel (the prompt's point glyph covers the pixel itself in both captures).
        assert drawn[y - 12 : y + 13, x - 12 : x + 13].mean() > 0.5, "the overlay covers the clicked place"
        inside = (drawn & firstMask).sum() / max(drawn.sum(), 1)
        assert drawn.sum() > 200 and inside > 0.7, (
            f"overlay at the clicked object: {drawn.sum()} px, {inside:.0%} inside"
        )
        print(f"click: {drawn.sum()} overlay pixels, {inside:.1%} inside the object's human mask")

        # Propagate forward over frames 0..15, then step to frame 10 with the keyboard.
        page.evaluate("window.trame.state.set('frame_range', [0, 15])")
        page.click("#sam2s-propagate")
        waitState(page, "s.get('status').startsWith('Done')", timeout=240)
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        waitState(page, "s.get('shown_frame') === 10")
        time.sleep(1.0)
        followed = overlayMask(page, width, height)

        idle = [frameChangeMs(page, target) for target in (3, 12, 7, 10)]

        # The segment list: add two, delete one, rename and recolour the other.
        page.click("#sam2s-add-segment")
        page.click("#sam2s-add-segment")
        waitState(page, "s.get('segments').length === 3")
        page.locator("#sam2s-segments .sam2s-delete-segment").nth(2).click()
        waitState(page, "s.get('segments').length === 2")
        page.locator("#sam2s-segments .sam2s-segment-name input").nth(1).fill("cystic artery")
        page.locator("#sam2s-segments .sam2s-segment-color").nth(1).evaluate(
            "(e) => { e.value = '#20c0f0'; e.dispatchEvent(new Event('change')); }"
        )
        waitState(page, "s.get('segments')[1].name === 'cystic artery' && s.get('segments')[1].color === '#20c0f0'")
        page.locator("#sam2s-segments .v-list-item").nth(1).click()
        waitState(page, "s.get('selected_segment') === s.get('segments')[1].id")

        # A second object, tracked over the whole clip and cancelled midway; frame changes meanwhile.
        page.evaluate("window.trame.state.set('frame', 0)")
        waitState(page, "s.get('shown_frame') === 0")
        promptPixel(page, *click2)
        page.evaluate(f"window.trame.state.set('frame_range', [0, {frameCount - 1}])")
        page.click("#sam2s-propagate")
        waitState(page, "s.get('running') === true && parseInt(s.get('progress_text')) >= 2", timeout=120)
        latencies = [frameChangeMs(page, target) for target in (5, 20, 3, 25, 8, 12)]
        page.click("#sam2s-cancel")
        waitState(page, "s.get('status').startsWith('Cancelled')", timeout=120)
        kept = int(re.search(r"(\d+) finished", state(page, "status")).group(1))
        print(
            f"frame change: idle {', '.join(f'{v:.0f}' for v in idle)} ms; during propagation "
            f"{', '.join(f'{v:.0f}' for v in latencies)} ms; cancelled with {kept} frames kept"
        )
        assert max(latencies) < 500, f"frame changes while tracking answered in {latencies} ms"
        assert 1 <= kept < frameCount

        # Export the .seg.nrrd and download it.
        prompts = page.evaluate("window.trame.trigger('sam2s_prompts')")
        webSegments = state(page, "segments")
        page.click("#sam2s-export-nrrd")
        waitState(page, "s.get('downloads').length > 0", timeout=120)
        with page.expect_download() as info:
            page.locator(".sam2s-download").first.click()
        downloaded = tmp_path / info.value.suggested_filename
        info.value.save_as(downloaded)
        assert downloaded.name.endswith(".seg.nrrd")
        memory = server.memoryMb()
        children = server.children()
        workFolders = set(Path(tempfile.gettempdir()).glob("sam2s-web-*"))
    finally:
        page.close()
        server.stop()
    # SIGTERM stops the app cleanly: exit code 0, its tracking server stopped, its work folder removed.
    assert server.proc.returncode == 0, "".join(server.lines[-20:])
    assert children, "the local tracking server ran as a child process"
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"the tracking server {pid} outlived the app"
    created = workFolders - previousFolders
    assert created and not any(folder.exists() for folder in created), f"work folder left: {created}"

    voxels, segments = _readSeg(downloaded)
    byName = {s["name"]: s for s in segments}
    assert set(byName) == {"Object 1", "cystic artery"}
    object1, object2 = (_segmentMask(voxels, byName[name]) for name in ("Object 1", "cystic artery"))
    mask10 = object1[:, :, 10].T  # (column, row, frame) -> frame 10 as (row, column)
    overlap = (followed & mask10).sum() / max((followed | mask10).sum(), 1)
    print(f"frame 10 after propagation: overlay vs exported mask IoU {overlap:.3f} ({mask10.sum()} px)")
    assert mask10.sum() > 200 and overlap > 0.7, "the overlay follows the object on a later frame"
    object2Frames = [k for k in range(object2.shape[2]) if object2[:, :, k].any()]
    assert object2Frames == list(range(kept)), f"finished frames stay, none after: {object2Frames}"

    # The same prompts and propagations in the headless logic give the same file content.
    one, two = (segment["id"] for segment in webSegments)
    steps = [("prompt", one, 0), ("track", one, 0, 15), ("prompt", two, 0), ("track", two, 0, kept - 1)]
    expected, expectedSegments = _readSeg(_headlessExport(video, prompts, webSegments, steps, tmp_path))
    assert expected.shape == voxels.shape
    assert np.array_equal(expected, voxels), f"{(expected != voxels).sum()} voxels differ from the headless logic"
    keys = ("name", "labelValue", "layer")
    assert [[s.get(k) for k in keys] for s in expectedSegments] == [[s.get(k) for k in keys] for s in segments]
    assert np.allclose([s["color"] for s in expectedSegments], [s["color"] for s in segments], atol=0.5 / 255)
    print(
        f"server start to ready {server.readySeconds:.1f} s; page to first image {firstImageSeconds:.1f} s; "
        f"web + tracking server memory {memory:.0f} MB"
    )


def test_non_loopback_bind_refuses_requests_without_the_token(browser, tmp_path):
    # No token on a public address: refused before anything starts (exit code 2, the fix named).
    result = subprocess.run(
        [sys.executable, "-m", "sam2sapp", "web", "--host", "0.0.0.0", "--port", "0", "--engine", "flow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "SAM2S_WEB_TOKEN"},
    )
    assert result.returncode == 2 and "--token" in result.stderr + result.stdout

    token = secrets.token_urlsafe(32)
    server = WebAppProcess(
        ["--host", "0.0.0.0", "--port", str(_freePort()), "--engine", "flow"],
        cwd=tmp_path,
        env={"SAM2S_WEB_TOKEN": token},
    )
    try:
        base = re.match(r"(http://[^/]+)/", server.url).group(1)
        assert token not in "".join(server.lines), "the token is never printed"

        def status(path: str, headers: dict | None = None) -> int:
            request = urllib.request.Request(base + path, headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        assert status("/") == 401
        assert status("/index.html") == 401
        assert status("/ws", {"Connection": "Upgrade", "Upgrade": "websocket"}) == 401
        assert status("/index.html?token=wrong" + "x" * 40) == 401
        assert status("/index.html", {"Authorization": "Bearer " + "y" * 43}) == 401
        assert status(f"/index.html?token={token}") == 200
        assert status("/index.html", {"Authorization": f"Bearer {token}"}) == 200
        assert status("/index.html", {"Cookie": f"sam2s_web_token={token}"}) == 200

        # In a browser: refused without the token; with ?token= the page (and its websocket) works.
        page = browser.new_page()
        try:
            assert page.goto(base + "/").status == 401
            page.goto(f"{base}/?token={token}")
            waitState(page, "s.get('status') === 'Open a video to start.'")
        finally:
            page.close()
    finally:
        server.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_upload_box_negative_point_and_clear_frame(browser, clip, tmp_path):
    server = WebAppProcess(["--port", "0", "--engine", "flow", "--allow-path", str(tmp_path)], cwd=tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 850})
    try:
        page.goto(server.url)
        waitState(page, "s.get('status') === 'Open a video to start.'")
        # A path outside the allowed folders is refused, saying how to allow it.
        page.fill("#sam2s-path", str(clip.videoFile))
        page.click("#sam2s-open")
        waitState(page, "s.get('status').includes('--allow-path')")
        assert state(page, "video_loaded") is False

        # Upload the video instead.
        page.set_input_files("input[type=file]", str(clip.videoFile))
        waitState(page, "s.get('video_loaded') === true", timeout=120)
        assert state(page, "video_name") == clip.videoFile.name
        height, width = clip.firstMask.shape
        _brightFirstSegment(page)

        # The box tool: a drag around object 2.
        page.click("#sam2s-tool-box")
        waitState(page, "s.get('tool_applied') === 'box'")
        x0, y0, x1, y1 = clip.box2
        corners = [
            page.evaluate(f"window.trame.trigger('sam2s_view_of_pixel', [{x}, {y}])") for x, y in ((x0, y0), (x1, y1))
        ]
        box = page.locator("#sam2s-view img").first.bounding_box()
        (ax, ay), (bx, by) = ((box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in corners)
        finished = state(page, "finished_jobs")
        page.mouse.move(ax, ay)
        page.mouse.down()
        page.mouse.move((ax + bx) / 2, (ay + by) / 2, steps=4)
        page.mouse.move(bx, by, steps=4)
        page.mouse.up()
        waitState(page, f"s.get('finished_jobs') > {finished}", timeout=120)
        assert state(page, "status").startswith("Frame 0 updated")
        waitState(page, "s.get('prompt_summary').startsWith('0 points, 1 boxes')")
        drawn = overlayMask(page, width, height)
        inside = drawn[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1].sum()
        assert drawn.sum() > 20 and inside / drawn.sum() > 0.9, (
            f"the box's mask lies in the box: {inside} of {drawn.sum()}"
        )

        # Shift+click with the point tool: a negative point of the same segment.
        page.click("#sam2s-tool-point")
        waitState(page, "s.get('tool_applied') === 'point'")
        promptPixel(page, *clip.click1, shift=True)
        waitState(page, "s.get('prompt_summary').startsWith('1 points, 1 boxes')")
        prompts = page.evaluate("window.trame.trigger('sam2s_prompts')")
        (frames,) = prompts.values()
        assert frames["0"]["labels"] == [0] and frames["0"]["box"] is not None

        # Clear frame removes the frame's prompts (the mask stays, as in Slicer).
        page.click("#sam2s-clear-frame")
        waitState(page, "s.get('prompt_summary').startsWith('0 points, 0 boxes')")
        assert page.evaluate("window.trame.trigger('sam2s_prompts')") == {}

        # Label PNGs (a zip) and COCO to download.
        for button, suffix in (("#sam2s-export-png", "_labels.zip"), ("#sam2s-export-coco", "_coco.json")):
            page.click(button)
            waitState(page, f"s.get('downloads').some((d) => d.name.endsWith('{suffix}'))", timeout=120)
            with page.expect_download() as info:
                page.locator(".sam2s-download", has_text=suffix).first.click()
            info.value.save_as(tmp_path / info.value.suggested_filename)
        with zipfile.ZipFile(tmp_path / f"{clip.videoFile.stem}_labels.zip") as archive:
            names = sorted(archive.namelist())
            first = np.array(Image.open(io.BytesIO(archive.read(names[0]))))
        assert names[0] == "labels/00000.png" and first.shape == (height, width) and (first > 0).sum() > 20
        coco = json.loads((tmp_path / f"{clip.videoFile.stem}_coco.json").read_text())
        assert coco["annotations"] and {a["image_id"] for a in coco["annotations"]} == {coco["images"][0]["id"]}

        # The review list: the object disappears after frame 0 (only frame 0 was computed); a click shows it.
        page.click("#sam2s-review")
        waitState(page, "s.get('review').length > 0", timeout=120)
        item = state(page, "review")[0]
        assert item["reason"] == "disappears" and item["frame"] == 1
        page.locator("#sam2s-review-list .v-list-item").first.click()
        waitState(page, "s.get('shown_frame') === 1")

        # Play and pause.
        page.click("#sam2s-play")
        waitState(page, "s.get('shown_frame') >= 4", timeout=30)
        page.click("#sam2s-play")
        waitState(page, "s.get('playing') === false")
        paused = state(page, "frame")
        time.sleep(0.5)
        assert state(page, "frame") == paused
    finally:
        page.close()
        server.stop()
