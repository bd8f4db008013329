"""DICOM video input (``SAM2SSlicerLib.dicomvideo``): files the tests write with pydicom (never
downloaded) -- Video Endoscopic Image Storage with an encapsulated H.264 stream, and multi-frame
uncompressed RGB / YBR_FULL / MONOCHROME2 -- read directly, through ``sam2s track`` (flow engine,
mask prompt) and through the module's headless import (``videoimport.importFrames``)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
av = pytest.importorskip("av")

from faultkit import run_without  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import convert_color_space  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from sam2sapp import cli  # noqa: E402
from SAM2SSlicerLib.dicomvideo import (  # noqa: E402
    VIDEO_ENDOSCOPIC_SOP_CLASS,
    DicomFrames,
    isDicomFile,
    openVideo,
)
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402

T, H, W = 12, 48, 64
H264_HIGH_41 = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264 High Profile / Level 4.1 (PS3.5 A.4.7)
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage


@pytest.fixture(scope="module")
def clip() -> tuple[SyntheticClip, np.ndarray]:
    c = SyntheticClip(T, H, W, num_objects=1)
    return c, np.stack([c.get(i) for i in range(T)])


def h264_stream(frames: np.ndarray) -> bytes:
    """Raw Annex-B H.264 (libx264, 4:2:0 as the DICOM High Profile, near-lossless CRF 1, no B-frames)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "1", "preset": "ultrafast", "bframes": "0"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return buf.getvalue()


def dataset(sop_class: str, transfer_syntax: str, frames: int, photometric: str, samples: int = 3) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "ES" if sop_class == VIDEO_ENDOSCOPIC_SOP_CLASS else "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = H, W, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    return ds


def write_h264(path: Path, frames: np.ndarray) -> bytes:
    stream = h264_stream(frames)
    ds = dataset(VIDEO_ENDOSCOPIC_SOP_CLASS, H264_HIGH_41, len(frames), "YBR_PARTIAL_420")
    ds.FrameTime, ds.CineRate = 40.0, 30  # Frame Time (25 fps) takes precedence over Cine Rate
    ds.FrameIncrementPointer = 0x00181063
    ds.PixelData = encapsulate([stream], fragments_per_frame=3, has_bot=False)  # PS3.5 8.2.7: several fragments
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return stream


def write_native(path: Path, frames: np.ndarray, photometric: str = "RGB") -> None:
    grey = frames.ndim == 3
    ds = dataset(US_MULTIFRAME, ExplicitVRLittleEndian, len(frames), photometric, 1 if grey else 3)
    ds.CineRate, ds.RecommendedDisplayFrameRate = 30, 15  # Cine Rate wins without Frame Time
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, clip) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dicom")
    _, frames = clip
    paths = {"h264": d / "endo.dcm", "rgb": d / "us_rgb"}  # the second has no suffix: found by content
    paths["stream"] = d / "stream.h264"
    paths["stream"].write_bytes(write_h264(paths["h264"], frames))
    write_native(paths["rgb"], frames)
    return paths


def test_h264_endoscopic_video(files, clip):
    _, frames = clip
    assert isDicomFile(files["h264"])
    src = openVideo(files["h264"])
    assert isinstance(src, DicomFrames) and src.transfer_syntax == H264_HIGH_41
    assert (len(src), src.height, src.width) == (T, H, W)
    assert src.fps == pytest.approx(25.0)  # Frame Time 40 ms, not Cine Rate 30
    assert src.frame_times[:3] == pytest.approx([0.0, 0.04, 0.08])
    got = np.stack([src.get(i) for i in range(T)])
    with av.open(str(files["stream"]), format="h264") as c:
        direct = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    np.testing.assert_array_equal(got, direct)  # the fragments were joined losslessly
    # 4:2:0 chroma subsampling of the 8-pixel texture costs a few grey levels; CRF 1 little more.
    assert np.abs(got.astype(int) - frames).mean() < 4.0
    assert np.abs(got[..., 1].astype(int) - frames[..., 1]).mean() < 3.0  # green ~ luma: near exact
    np.testing.assert_array_equal(src.get(2), got[2])  # going back restarts the decoder
    src.close()
    np.testing.assert_array_equal(src.get(11), got[11])


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "MONOCHROME2"])
def test_multiframe_native(tmp_path, clip, photometric):
    _, frames = clip
    path = tmp_path / "mf.bin"
    if photometric == "MONOCHROME2":
        stored, expected = frames[..., 1], np.repeat(frames[..., 1:2], 3, axis=3)
    elif photometric == "YBR_FULL":
        stored, expected = convert_color_space(frames, "RGB", "YBR_FULL"), frames
    else:
        stored, expected = frames, frames
    write_native(path, stored, photometric)
    src = openVideo(path)
    assert isinstance(src, DicomFrames)
    assert (len(src), src.height, src.width, src.fps) == (T, H, W, 30.0)
    got = np.stack([src.get(i) for i in range(T)])
    assert got.dtype == np.uint8 and got.shape == (T, H, W, 3)
    if photometric == "YBR_FULL":
        assert np.abs(got.astype(int) - expected).max() <= 2  # YCbCr rounding (PS3.3 C.7.6.3.1.2)
    else:
        np.testing.assert_array_equal(got, expected)


def test_non_dicom_goes_to_the_engine(tmp_path, clip):
    _, frames = clip
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(frames[i]).save(folder / f"{i:05d}.png")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 200)  # a .dcm name without the DICM marker is no DICOM
    assert not isDicomFile(tmp_path / "fake.dcm") and not isDicomFile(folder)
    src = openVideo(folder)
    assert not isinstance(src, DicomFrames) and len(src) == 2
    with pytest.raises(ValueError, match="unsupported extension"):
        openVideo(tmp_path / "fake.dcm")


def write_mask_prompt(tmp_path: Path, clip: SyntheticClip) -> Path:
    Image.fromarray((clip.mask(0, 0) > 0).astype(np.uint8) * 255).save(tmp_path / "m0.png")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps({"objects": [{"id": 1, "name": "blob", "prompts": [{"frame": 0, "mask": "m0.png"}]}]})
    )
    return prompts


@pytest.mark.parametrize("kind", ["h264", "rgb"])
def test_track_dicom_with_flow_engine(files, clip, tmp_path, capsys, kind):
    c, _ = clip
    prompts = write_mask_prompt(tmp_path, c)
    png = tmp_path / "png"
    code = cli.main(["track", str(files[kind]), "--prompts", str(prompts), "--png-dir", str(png), "--engine", "flow"])
    err = capsys.readouterr().err
    assert code == 0, err
    labels = [np.asarray(Image.open(p)) for p in sorted(png.glob("*.png"))]
    assert len(labels) == T and labels[0].shape == (H, W)
    first, prompt = labels[0] == 1, c.mask(0, 0) > 0
    assert (first & prompt).sum() / (first | prompt).sum() > 0.9  # the mask prompt, in the DICOM's pixels
    assert all((lab == 1).any() for lab in labels)  # followed to the last frame


def test_module_import_headless(files, clip):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from SAM2SSlicerLib import headless

    _, frames = clip
    logic = headless.createTrackingLogic()
    node = logic.importVideo(str(files["rgb"]))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), frames)
    assert float(node.GetAttribute("SAM2S.FrameRate")) == pytest.approx(30.0)
    assert node.GetAttribute("SAM2S.SourceType") == "video"
    node = logic.importVideo(str(files["h264"]))
    video = slicer.util.arrayFromVolume(node)
    assert video.shape == (T, H, W, 3) and np.abs(video.astype(int) - frames).mean() < 4.0
    assert float(node.GetAttribute("SAM2S.FrameRate")) == pytest.approx(25.0)
    assert node.GetName() == "endo"


def test_without_pydicom_says_how_to_install_it(files, clip, tmp_path):
    prompts = write_mask_prompt(tmp_path, clip[0])
    out = tmp_path / "out"
    command = ["-m", "sam2sapp", "track", str(files["h264"]), "--prompts", str(prompts)]
    proc = run_without(["pydicom"], command + ["--png-dir", str(out), "--engine", "flow"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install -e ".[dicom]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dicom", "mp4 outside the server's roots"])
def test_a_video_the_server_cannot_open_is_tracked_through_the_local_server_as_in_process(files, clip, tmp_path, kind):
    """N4 of issue 23: the local server opens only video containers and image folders; a DICOM video
    imported into the scene reaches it through shared memory. N3: an mp4 outside the folders the
    server may read (on Windows: a UNC share, formerly any other drive) does too, instead of a 403.
    The masks equal those tracked in this process (the flow engine, the same mask prompt)."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    pytest.importorskip("fastapi")
    from sam2sapp.visualize import write_video
    from SAM2SSlicerLib import headless
    from SAM2SSlicerLib.backends import InProcessBackend, LocalServer, ServerBackend, localServerRoots
    from SAM2SSlicerLib.settings import ModelSettings

    source, frames = clip
    if kind == "dicom":
        video, roots = files["h264"], None
    else:
        (tmp_path / "readable").mkdir()
        (tmp_path / "elsewhere").mkdir()
        video, roots = write_video(tmp_path / "elsewhere" / "clip.mp4", frames), [str(tmp_path / "readable")]
    assert localServerRoots() == [os.path.abspath(os.sep)] or os.name == "nt"
    masks = {}
    local = LocalServer(roots=roots)
    try:
        for name, backend in (("here", InProcessBackend()), ("server", ServerBackend(localServer=local))):
            logic = headless.createTrackingLogic(backend=backend)
            logic.setModelSettings(ModelSettings(engine="flow", device="cpu"))
            logic.importVideo(str(video))
            logic.createSegmentation()
            sid = logic.addSegment("object", objectId=1)
            logic.setMaskPrompt(sid, 0, source.mask(0, 0))
            job = logic.track([sid], direction="forward")
            assert job.status == "done" and job.trackedFrames == list(range(T)), (name, job.error)
            assert job.session.isRemote is (name == "server")
            masks[name] = logic.segmentMask(sid)
            logic.close()
    finally:
        local.stop()
    assert masks["here"][1:].any()
    np.testing.assert_array_equal(masks["here"], masks["server"])
