"""Memory and time of the Segment Editor's undo states for preview clicks on a long video.

A 1,000-frame 854x480 video segmentation with two tracked objects on every frame (written in
100-frame chunks with ``segments.writeSegmentFrames``, as a propagation does; the objects cross,
so each has its own labelmap layer), then 10 preview-like clicks: each writes ONE frame of the
larger object and is preceded by the REAL ``vtkSlicerSegmentEditorLogic.SaveStateForUndo``:

* ``default``: Slicer's Segment Editor setting, 10 undo states;
* ``bounded``: ``undo.limitUndoStates(editor, segmentation, budget)`` before each click, and no
  ``SaveStateForUndo`` when it returns 0 (what the module does with ``SAM2SSlicerLib.undo``).

Each configuration runs in a fresh Python process (its peak RSS is its own). Printed per
configuration: what one ``SaveStateForUndo`` copies (the rise of the peak RSS during the call:
the deep copy exists before Slicer drops the oldest state) and how much the history grows per
save (glibc ``mallinfo2``: allocated bytes kept afterwards), what the history keeps after the
clicks (the bytes ``ClearUndoState`` gives back), the peak RSS during the clicks (``VmHWM``,
reset through ``/proc/self/clear_refs``) and of the whole process (setup included), and the
time ``SaveStateForUndo`` and one Undo take. The video's pixels are not allocated (only its
geometry: the segmentation and the editor need no pixels); in Slicer they add
frames x 854 x 480 x 3 bytes (1.23 GB) to both configurations alike. Example::

    python benchmarks/bench_undo.py                      # 1000 frames of 854x480, budget 1 GiB
    python benchmarks/bench_undo.py --frames 200 --json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _allocatedBytes() -> int:
    """Bytes malloc has handed out and not taken back (glibc >= 2.33)."""
    function = ctypes.CDLL(None).mallinfo2
    function.restype = _MallInfo2
    info = function()
    return int(info.uordblks + info.hblkhd)


def _resetPeakRss() -> bool:
    """Reset the process's peak RSS (``VmHWM``; Linux >= 4.0). False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _statusKib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _ellipse(xx, yy, cx: float, cy: float, rx: float, ry: float):
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0


def _objectMasks(objectIndex: int, first: int, count: int, frames: int, height: int, width: int):
    """(count, H, W) bool masks of a generated object on frames ``first..first + count - 1``.

    Object 0 ("instrument"): a large ellipse sweeping across the frame; object 1 ("tissue"): a
    smaller one drifting around the lower right. They cross, as tracked objects do."""
    import numpy as np

    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    out = np.empty((count, height, width), dtype=bool)
    for i in range(count):
        t = (first + i) / max(frames - 1, 1)
        if objectIndex == 0:
            cx = width * (0.15 + 0.7 * t)
            cy = height * (0.5 + 0.25 * np.sin(6.28 * t))
            out[i] = _ellipse(xx, yy, cx, cy, width * 0.14, height * 0.15)
        else:
            cx = width * (0.7 + 0.1 * np.cos(6.28 * t))
            cy = height * (0.62 + 0.1 * np.sin(6.28 * t))
            out[i] = _ellipse(xx, yy, cx, cy, width * 0.1, height * 0.12)
    return out


def runOne(mode: str, frames: int, height: int, width: int, clicks: int, budget: int, states: int) -> dict:
    """One configuration in this process; returns the measured numbers."""
    sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
    import slicer
    import vtk
    from SAM2SSlicerLib import headless, segments, undo
    from SAM2SSlicerLib.videoimport import IJK_TO_RAS_DIRECTIONS

    scene = headless.createHeadlessScene()
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, frames)  # geometry only (see the module docstring)
    video = slicer.vtkMRMLVectorVolumeNode()
    video.SetAndObserveImageData(image)
    video.SetIJKToRASDirections(*[v for row in IJK_TO_RAS_DIRECTIONS for v in row])
    scene.scene.AddNode(video)
    seg = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "video segmentation")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(video)
    segmentation = seg.GetSegmentation()
    ids = [
        segmentation.AddEmptySegment("", name, color)
        for name, color in (("instrument", [1, 0, 0]), ("tissue", [0, 1, 0]))
    ]
    t0 = time.perf_counter()
    for begin in range(0, frames, 100):  # as applyTrackingResults writes a propagation, in chunks
        count = min(100, frames - begin)
        for index, segmentId in enumerate(ids):
            masks = _objectMasks(index, begin, count, frames, height, width)
            segments.writeSegmentFrames(seg, segmentId, video, begin, masks)
    propagation_s = time.perf_counter() - t0

    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene.scene)
    editor.SetMRMLApplicationLogic(scene.applicationLogic)
    editorNode = scene.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetSegmentEditorNode(editorNode)
    editorNode.SetAndObserveSegmentationNode(seg)
    editor.SetSourceVolumeNode(video)
    editor.SetMaximumNumberOfUndoStates(states)

    layers = [undo.dataObjectBytes(segmentation.GetLayerDataObject(i)) for i in range(segmentation.GetNumberOfLayers())]
    row = {
        "mode": mode,
        "frames": frames,
        "height": height,
        "width": width,
        "budget_bytes": budget if mode == "bounded" else None,
        "layer_bytes": layers,
        "full_state_bytes": undo.fullUndoStateBytes(seg),
        "predicted_state_bytes": undo.undoStateBytes(seg),
        "propagation_write_s": propagation_s,
        "rss_before_clicks_mib": _statusKib("VmRSS") / 1024,
    }
    baseline, liveBaseline = _allocatedBytes(), undo.fullUndoStateBytes(seg)

    def historyBytes() -> int:
        """Allocated since the clicks began, less the growth of the live segmentation."""
        return _allocatedBytes() - baseline - (undo.fullUndoStateBytes(seg) - liveBaseline)

    setupPeakKib = _statusKib("VmHWM")  # before the first reset: the propagation's peak
    peakKib = [_statusKib("VmRSS")]

    def measure(function):
        """Run ``function``; returns (its result, seconds, bytes the RSS peaked above its start)."""
        resetOk = _resetPeakRss()
        start = _statusKib("VmRSS")
        t = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - t
        peak = _statusKib("VmHWM") if resetOk else 0
        peakKib.append(max(peak, _statusKib("VmRSS")))
        return result, seconds, max(peak - start, 0) * 1024

    saves, limitSeconds, limits, writeSeconds, keptSeries = [], [], [], [], []
    for click in range(clicks):
        frame = (click * 97 + 13) % frames
        mask = _objectMasks(0, frame, 1, frames, height, width)
        mask[0, : height // 10] = False  # the click trims the top of the instrument on this frame
        if mode == "bounded":
            t = time.perf_counter()
            limit = undo.limitUndoStates(editor, seg, budget, states)
            limitSeconds.append(time.perf_counter() - t)
            limits.append(limit)
        else:
            limit = states
        if limit:
            before = historyBytes()
            _, seconds, copied = measure(editor.SaveStateForUndo)
            saves.append({"seconds": seconds, "rss_rise_bytes": copied, "net_bytes": historyBytes() - before})
        _, seconds, _ = measure(
            lambda frame=frame, mask=mask: segments.writeSegmentFrames(seg, ids[0], video, frame, mask)
        )
        writeSeconds.append(seconds)
        keptSeries.append(historyBytes())
    canUndo = bool(editor.CanUndo())
    undoSeconds = None
    if canUndo:  # one Undo: the restored frame is the one before the last click
        _, undoSeconds, _ = measure(editor.Undo)
    before = _allocatedBytes()
    editor.ClearUndoState()
    kept = before - _allocatedBytes()
    row.update(
        {
            "undo_states_limit": limits[-1] if limits else states,
            "saves": saves,
            "limit_call_s": limitSeconds,
            "write_s": writeSeconds,
            "history_bytes_after_each_click": keptSeries,
            "kept_bytes": kept,
            "can_undo_after_clicks": canUndo,
            "undo_s": undoSeconds,
            "peak_rss_clicks_mib": max(peakKib) / 1024,
            "peak_rss_process_mib": max(setupPeakKib, *peakKib) / 1024,
        }
    )
    return row


def _fmtBytes(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def _report(rows: list[dict]) -> str:
    first = rows[0]
    lines = [
        f"Video {first['frames']} frames of {first['width']}x{first['height']}, 2 objects on every frame; labelmap "
        f"layers {', '.join(_fmtBytes(b) for b in first['layer_bytes'])}: undoStateBytes = "
        f"{_fmtBytes(first['predicted_state_bytes'])} per click, fullUndoStateBytes = "
        f"{_fmtBytes(first['full_state_bytes'])}. {len(first['write_s'])} one-frame clicks on the larger object.",
        "",
        f"{'configuration':<28}{'states':>7}{'saves':>6}{'copied/save':>13}{'history growth/save':>21}"
        f"{'kept after clicks':>19}{'peak RSS (clicks)':>19}{'SaveStateForUndo':>18}",
    ]
    for row in rows:
        if row["mode"] == "default":
            name = f"default ({row['undo_states_limit']} states)"
        else:
            name = f"bounded ({row['budget_bytes'] / 2**30:g} GiB budget)"
        saves = row["saves"][1:] or row["saves"]  # the first state copies every layer
        lines.append(
            f"{name:<28}{row['undo_states_limit']:>7}{len(row['saves']):>6}"
            f"{_fmtBytes(_median([s['rss_rise_bytes'] for s in saves])):>13}"
            f"{_fmtBytes(_median([s['net_bytes'] for s in saves])):>21}"
            f"{_fmtBytes(row['kept_bytes']):>19}{row['peak_rss_clicks_mib']:>15,.0f} MiB"
            f"{_median([s['seconds'] for s in saves]) * 1e3:>15,.0f} ms"
        )
    lines.append("")
    for row in rows:
        seconds = [s["seconds"] * 1e3 for s in row["saves"]]
        history = ", ".join(f"{b / 1e6:,.0f}" for b in row["history_bytes_after_each_click"])
        lines.append(
            f"{row['mode']}: SaveStateForUndo min/median/max {min(seconds):,.0f}/{_median(seconds):,.0f}/"
            f"{max(seconds):,.0f} ms (first state {_fmtBytes(row['saves'][0]['net_bytes'])}); history after each "
            f"click [MB]: {history}; one-frame write median {_median(row['write_s']) * 1e3:,.0f} ms; "
            f"RSS before clicks {row['rss_before_clicks_mib']:,.0f} MiB, process peak {row['peak_rss_process_mib']:,.0f} MiB"
        )
        if row["limit_call_s"]:
            lines.append(f"  limitUndoStates took {max(row['limit_call_s']) * 1e6:,.0f} us at most")
        if row["undo_s"] is not None:
            lines.append(f"  one Undo after the clicks: {row['undo_s'] * 1e3:,.0f} ms")
    lines.append(
        "copied/save: rise of the peak RSS during SaveStateForUndo (the deep copy, before Slicer drops the oldest "
        "state); history growth/save: allocated bytes kept afterwards (mallinfo2)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument(
        "--budget-gib", type=float, default=None, help="undo budget (default: undo.DEFAULT_UNDO_BUDGET)"
    )
    parser.add_argument("--states", type=int, default=10, help="Slicer's maximum number of undo states (10)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--mode", choices=["default", "bounded"], help=argparse.SUPPRESS)  # one run, this process
    args = parser.parse_args(argv)
    if args.budget_gib is None:
        sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
        from SAM2SSlicerLib.undo import DEFAULT_UNDO_BUDGET

        budget = DEFAULT_UNDO_BUDGET
    else:
        budget = int(args.budget_gib * 2**30)
    if args.mode:
        row = runOne(args.mode, args.frames, args.height, args.width, args.clicks, budget, args.states)
        print(json.dumps(row))
        return 0
    rows = []
    for mode in ("default", "bounded"):
        command = [sys.executable, __file__, "--mode", mode, "--frames", str(args.frames), "--height", str(args.height)]
        command += ["--width", str(args.width), "--clicks", str(args.clicks), "--states", str(args.states)]
        command += ["--budget-gib", repr(budget / 2**30)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stderr[-4000:])
            return result.returncode
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows, indent=1) if args.json else _report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
