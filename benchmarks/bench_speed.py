"""Tracking speed of sam2s versus Meta's reference (sam2==1.1.0): same weights, same frames, one run.

Both trackers get the same random weights (``meta_reference.build_reference``, saved as a
checkpoint that ``sam2s.build_model`` loads) and the same prompts on frame 0 of the real clip
``../shared/data/endoscapes_v4/frames`` (or of a generated clip when it is absent): object 1 a
click on the gallbladder [[451, 137]], object 2 a box on the cystic artery [543, 230, 587, 273]
(``prompts.json``). Their propagation generators are driven ALTERNATELY, frame by frame
(reference frame t, then sam2s frame t, ...), so that the noise of a shared machine hits both.
The reference runs in fp32 (as Meta runs on CPU); sam2s at ``--precision`` when this sam2s has
that setting (``sam2s.build_model(..., precision=)``), else in fp32 (said in the output).

Also measured, in the same run, for sam2s only:

- a per-component breakdown (image encoder, memory attention, mask decoder + prompt encoder,
  memory encoder, other), exclusive wall time from forward hooks on the modules of
  ``sam2s/modeling/sam2.py`` (and the prompt encoder's ``embed_*`` / ``dense_pe`` methods);
- FLOPs per tracked frame from ``torch.utils.flop_counter.FlopCounterMode`` plus the attention
  it does not count on CPU (``scaled_dot_product_attention``: 4*B*heads*Nq*Nk*d per call,
  counted by a wrapper), in a separate untimed pass, and the achieved GFLOP/s;
- this CPU's fp32 and bf16 matmul rates (2048x2048 ``torch.mm``, same thread count, sampled after
  every frame pair: median and range), and the
  achieved rate as a share of the bf16 one;
- 1 object versus ``--objects`` objects, alternated frame by frame (acceptance of issue 12: 3
  objects cost at most 2x one object at 512 px). The third object is a click [[610, 400]] on the
  reddish tissue at the bottom right of frame 0 (not annotated in the clip; any structure does).

``--versus CONFIG`` (e.g. ``edgetam``, issue 24) adds a second sam2s model to the alternation
(reference frame t, sam2s frame t, versus frame t, ...), with seeded random weights
(``meta_reference.perturb_``; EdgeTAM's reference is not needed for its speed), at the same
``--precision`` and prompts: its times, its FLOPs per frame (attention included) and its speed-up
over the first sam2s model and over Meta's reference are printed.

Times: "median" is over the tracked frames 1..T-1; "total" is all propagation steps including
frame 0 (its prompt result and first memory); the prompts (which encode frame 0) are listed
apart. ::

    python benchmarks/bench_speed.py --image-size 512 --frames 12
    python benchmarks/bench_speed.py --image-size 1024 --frames 6 --json speed.json
    python benchmarks/bench_speed.py --image-size 1024 --frames 8 --objects 0 --versus edgetam
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's progress bar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAM2SSlicer"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sam2s  # noqa: E402
from meta_reference import SHARED_DATA, build_reference, perturb_  # noqa: E402 - Meta's reference, random weights
from SAM2SSlicerLib.synthetic import SyntheticClip  # noqa: E402

# (object id, kind, value, what) on frame 0 of the real clip; 1 and 2 are ../shared/.../prompts.json
REAL_PROMPTS = [
    (1, "points", [[451, 137]], "click (gallbladder)"),
    (2, "box", [543, 230, 587, 273], "box (cystic artery)"),
    (3, "points", [[610, 400]], "click (tissue, bottom right)"),
]
warnings.filterwarnings("ignore", message="cannot import name '_C'")  # reference: no CUDA post-processing
COMPONENTS = ("image encoder", "memory attention", "mask decoder + prompt encoder", "memory encoder")


# --------------------------------------------------------------------------------- inputs
def prepare_frames(folder: Path, frames: int) -> tuple[str, list]:
    """Write ``frames`` JPEGs into ``folder``; returns (clip description, prompts of 3 objects)."""
    if (SHARED_DATA / "frames").is_dir():
        available = sorted((SHARED_DATA / "frames").glob("*.jpg"))
        if frames > len(available):
            raise SystemExit(f"--frames {frames}: the real clip has {len(available)} frames")
        for path in available[:frames]:
            shutil.copy(path, folder)
        return f"real clip {SHARED_DATA.name}", REAL_PROMPTS
    clip = SyntheticClip(frames, 480, 854, num_objects=3)
    for i in range(frames):
        Image.fromarray(clip.get(i)).save(folder / f"{i:05d}.jpg", quality=95)
    prompts = []
    for k, kind in enumerate(("points", "box", "points")):
        ys, xs = np.nonzero(clip.mask(0, k))
        if kind == "box":
            value = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        else:
            value = [[float(xs.mean()), float(ys.mean())]]
        prompts.append((k + 1, kind, value, f"{'box' if kind == 'box' else 'click'} (ellipse {k + 1})"))
    return "generated clip (../shared/data/endoscapes_v4 absent)", prompts


def add_ref(ref, state, prompt) -> None:
    obj, kind, value, _ = prompt
    if kind == "box":
        ref.add_new_points_or_box(state, 0, obj, box=value)
    else:
        ref.add_new_points_or_box(state, 0, obj, points=value, labels=[1] * len(value))


def add_ours(tracker, prompt) -> None:
    obj, kind, value, _ = prompt
    if kind == "box":
        tracker.add_box(0, obj, value)
    else:
        tracker.add_points(0, obj, value, [1] * len(value))


# ------------------------------------------------------------------------------ sam2s build
def build_ours(config: str, image_size: int, checkpoint: Path, precision: str):
    """``sam2s.build_model`` with the reference's weights (a checkpoint file, so that any precision
    conversion of ``build_model`` happens after loading) and ``precision`` where this sam2s has it.
    Returns (model, VideoTracker keyword arguments, description of the precision)."""
    model_kw, tracker_kw = {}, {}
    if "precision" in inspect.signature(sam2s.build_model).parameters:
        model_kw["precision"] = precision
    elif "precision" in inspect.signature(sam2s.VideoTracker).parameters:
        tracker_kw["precision"] = precision
    model = sam2s.build_model(config, checkpoint=checkpoint, image_size=image_size, **model_kw)
    if not (model_kw or tracker_kw):
        return model, tracker_kw, f"fp32 (this sam2s has no precision= setting; --precision {precision} ignored)"
    return model, tracker_kw, precision


def resolved_precision(requested: str, *objects) -> str:
    """``requested`` and, when sam2s exposes what it resolved to (a ``precision`` attribute of the
    tracker, the model or its config, or the dtype of the weights), that too: ``auto -> bf16``."""
    if requested.startswith("fp32 ("):
        return requested
    found = None
    for obj in objects:
        for holder in (obj, getattr(obj, "config", None)):
            value = getattr(holder, "precision", None)
            if isinstance(value, str | torch.dtype) and found is None:
                found = str(value).replace("torch.", "")
    weights = {
        str(p.dtype).replace("torch.", "") for o in objects if isinstance(o, torch.nn.Module) for p in o.parameters()
    }
    if found is None and weights != {"float32"}:
        found = "weights " + "/".join(sorted(weights))
    return f"{requested} -> {found}" if found and found != requested else requested


# ----------------------------------------------------------------------------- measuring
class Sections:
    """Exclusive wall time (and FLOPs, when ``flop_source`` is set) of sam2s's components.

    Each component module and all its descendants get forward pre/post hooks, and their public
    methods other than ``forward`` (e.g. the prompt encoder's ``embed_points``, the memory
    attention's cached-key paths) are wrapped on the instance, so that work done outside a
    component's ``forward`` still counts. A stack makes the times exclusive: a nested section
    pauses its parent. Time outside all sections (tracker bookkeeping, object pointers,
    resizing the masks to the video) is "other".
    """

    def __init__(self, model) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, float] = defaultdict(float)
        self.flop_source = None  # () -> FLOPs so far in the current frame
        self._stack: list[str] = []
        self._mark = 0.0
        self._flop_mark = 0.0
        groups = {
            "image encoder": [model.image_encoder],
            "memory attention": [model.memory_attention],
            "mask decoder + prompt encoder": [model.sam_mask_decoder, model.sam_prompt_encoder],
            "memory encoder": [model.memory_encoder],
        }
        for name, roots in groups.items():
            for root in roots:
                for module in root.modules():
                    module.register_forward_pre_hook(lambda m, args, n=name: self.enter(n))
                    module.register_forward_hook(lambda m, args, out, n=name: self.leave())
                    for method in self._own_methods(module):
                        setattr(module, method, self.wrap(name, getattr(module, method)))

    @staticmethod
    def _own_methods(module) -> list[str]:
        """Public functions of the module's classes outside PyTorch (sam2s's), but ``forward``."""
        names = set()
        for cls in type(module).__mro__:
            if not issubclass(cls, torch.nn.Module) or cls.__module__.split(".")[0] == "torch":
                continue
            names |= {k for k, v in vars(cls).items() if inspect.isfunction(v) and not k.startswith("_")}
        return sorted(names - {"forward", "extra_repr"})

    def wrap(self, name, function):
        def wrapped(*args, **kwargs):
            self.enter(name)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave()

        return wrapped

    def _charge(self) -> None:
        now = time.perf_counter()
        flops = self.flop_source() if self.flop_source is not None else 0.0
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
            self.flops[self._stack[-1]] += flops - self._flop_mark
        self._mark, self._flop_mark = now, flops

    def enter(self, name: str) -> None:
        self._charge()
        self._stack.append(name)

    def leave(self) -> None:
        self._charge()
        if self._stack:
            self._stack.pop()

    def reset(self) -> None:
        self.seconds.clear()
        self.flops.clear()
        self._stack.clear()
        self._flop_mark = 0.0


def attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """FLOPs of one attention: 2*B*Nq*Nk*d for Q K^T plus 2*B*Nq*Nk*dv for P V (= 4*B*heads*Nq*Nk*d)."""
    nq, d = q.shape[-2:]
    nk, dv = k.shape[-2], v.shape[-1]
    batch = max(math.prod(q.shape[:-2]), math.prod(k.shape[:-2]))
    return 2 * batch * nq * nk * (d + dv)


def _register_fused_linear_flops() -> None:
    """Teach ``FlopCounterMode`` oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``,
    used by ``sam2s.modeling.common.Linear`` in bf16 on CPU): 2*M*K*N, like ``addmm``."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return

    @torch.utils.flop_counter.register_flop_formula(op)
    def linear_pointwise_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]


_register_fused_linear_flops()


class CountedFrame:
    """FLOPs of one call: ``FlopCounterMode`` (matmul / conv) + the scaled-dot-product attention
    it leaves at 0 on CPU (counted by a wrapper of ``F.scaled_dot_product_attention``; a call the
    counter did see, e.g. a decomposed math path, is not added twice)."""

    def __init__(self) -> None:
        self.counter = FlopCounterMode(display=False)
        self.attention = 0

    def total(self) -> float:
        return float(self.counter.get_total_flops() + self.attention)

    @contextlib.contextmanager
    def counting(self):
        original = F.scaled_dot_product_attention

        def sdpa(q, k, v, *args, **kwargs):
            before = self.counter.get_total_flops()
            out = original(q, k, v, *args, **kwargs)
            if self.counter.get_total_flops() == before:
                self.attention += attention_flops(q, k, v)
            return out

        torch.nn.functional.scaled_dot_product_attention = sdpa
        try:
            with self.counter:
                yield self
        finally:
            torch.nn.functional.scaled_dot_product_attention = original


def timed_step(generator, reference: bool = False) -> tuple[float, int]:
    """``next(generator)`` timed; the reference runs without autocast (fp32), whatever the other
    generator left enabled. Returns (seconds, frame index)."""
    guard = torch.autocast("cpu", enabled=False) if reference else contextlib.nullcontext()
    with torch.inference_mode(), guard:
        t0 = time.perf_counter()
        frame = next(generator)[0]
        return time.perf_counter() - t0, frame


class MatmulRates:
    """This CPU's ``n x n`` ``torch.mm`` rate in fp32 and bf16, sampled between the tracking steps.

    The shared machines' rates swing (the bf16 one by 2x within minutes, with AMX units shared
    between neighbours), so one measurement at the start does not describe the run: ``sample``
    times one product of each dtype after every frame pair, under the same load as the frames,
    and the report uses the median (and shows the range).
    """

    def __init__(self, n: int = 2048) -> None:
        torch.manual_seed(0)
        self.n = n
        self.pairs = {
            dt: (torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)) for dt in (torch.float32, torch.bfloat16)
        }
        self.samples: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for a, b in self.pairs.values():
            torch.mm(a, b)  # warm-up (kernel selection, AMX tile set-up)
        for _ in range(2):
            self.sample()

    def sample(self) -> None:
        for dt, (a, b) in self.pairs.items():
            t0 = time.perf_counter()
            torch.mm(a, b)
            self.samples[str(dt).replace("torch.", "")].append(2 * self.n**3 / (time.perf_counter() - t0) / 1e9)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            k: {"median": median(v), "min": min(v), "max": max(v), "samples": len(v)} for k, v in self.samples.items()
        }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="sam2.1_hiera_t")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--frames", type=int, default=12, help="frames propagated (>= 3), frame 0 prompted")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto", help='sam2s precision: "auto" | "fp32" | "bf16" (reference: fp32)')
    p.add_argument("--objects", type=int, default=3, choices=(0, 2, 3), help="time 1 vs N objects of sam2s (0: skip)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--versus", metavar="CONFIG", help="a second sam2s config timed in the same alternation")
    a = p.parse_args()
    if a.frames < 3:
        p.error("--frames must be >= 3")
    torch.set_num_threads(a.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    try:
        results = run(a, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(a, results)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


def run(a, folder: Path) -> dict:
    frames_dir = folder / "frames"
    frames_dir.mkdir()
    clip, prompts = prepare_frames(frames_dir, a.frames)
    ref = build_reference(a.config, a.image_size)
    checkpoint = folder / "weights.pt"
    torch.save({"model": ref.state_dict()}, checkpoint)  # Meta's checkpoint format
    ours, tracker_kw, precision = build_ours(a.config, a.image_size, checkpoint, a.precision)
    versus = None
    if a.versus:
        torch.manual_seed(0)
        versus = perturb_(sam2s.build_model(a.versus, image_size=a.image_size, precision=a.precision), 0)
    sections = Sections(ours)
    rates = MatmulRates()
    autocast_leaks = 0

    # ---- reference and sam2s, 2 objects, alternated frame by frame
    with torch.inference_mode():
        state = ref.init_state(str(frames_dir), offload_video_to_cpu=True)
    tracker = sam2s.VideoTracker(ours, frames_dir, **tracker_kw)
    precision = resolved_precision(precision, tracker, ours)
    prompt_s = {"reference": 0.0, "sam2s": 0.0}
    for prompt in prompts[:2]:
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            t0 = time.perf_counter()
            add_ref(ref, state, prompt)
            prompt_s["reference"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        add_ours(tracker, prompt)
        prompt_s["sam2s"] += time.perf_counter() - t0
    steps = {"reference": [], "sam2s": []}
    gen_ref, gen_ours = ref.propagate_in_video(state), tracker.propagate()
    gen_versus = None
    if versus is not None:
        tracker_versus = sam2s.VideoTracker(versus, frames_dir)
        t0 = time.perf_counter()
        for prompt in prompts[:2]:
            add_ours(tracker_versus, prompt)
        prompt_s["versus"] = time.perf_counter() - t0
        gen_versus, steps["versus"] = tracker_versus.propagate(), []
    for t in range(a.frames):
        s_ref, f_ref = timed_step(gen_ref, reference=True)
        if t == 1:
            sections.reset()  # the breakdown covers the tracked frames 1..T-1
        s_ours, f_ours = timed_step(gen_ours)
        autocast_leaks += torch.is_autocast_enabled("cpu")
        if f_ref != t or f_ours != t:
            raise RuntimeError(f"frame order differs: reference {f_ref}, sam2s {f_ours}, expected {t}")
        steps["reference"].append(s_ref)
        steps["sam2s"].append(s_ours)
        if gen_versus is not None:
            steps["versus"].append(timed_step(gen_versus)[0])
        rates.sample()
    for gen in (gen_ref, gen_ours, gen_versus):
        if gen is not None:
            gen.close()
    component_s = {k: sections.seconds.get(k, 0.0) for k in COMPONENTS}
    component_s["other"] = sum(steps["sam2s"][1:]) - sum(component_s.values())
    del state, tracker

    # ---- FLOPs of sam2s per frame (untimed pass, same prompts)
    tracker = sam2s.VideoTracker(ours, frames_dir, **tracker_kw)
    for prompt in prompts[:2]:
        add_ours(tracker, prompt)
    gen = tracker.propagate()
    flops, attention = [], []
    for t in range(a.frames):
        frame = CountedFrame()
        if t == 1:
            sections.reset()
        sections.flop_source, sections._flop_mark = frame.total, 0.0
        with torch.inference_mode(), frame.counting():
            next(gen)
        sections.flop_source = None
        flops.append(frame.total())
        attention.append(frame.attention)
    gen.close()
    component_flops = {k: sections.flops.get(k, 0.0) for k in COMPONENTS}
    component_flops["other"] = sum(flops[1:]) - sum(component_flops.values())
    del tracker
    versus_flops, versus_attention = [], []
    if versus is not None:  # its FLOPs per frame, attention included (untimed pass, same prompts)
        tracker = sam2s.VideoTracker(versus, frames_dir)
        for prompt in prompts[:2]:
            add_ours(tracker, prompt)
        gen = tracker.propagate()
        for _ in range(a.frames):
            frame = CountedFrame()
            with torch.inference_mode(), frame.counting():
                next(gen)
            versus_flops.append(frame.total())
            versus_attention.append(frame.attention)
        gen.close()
        del tracker

    # ---- sam2s: 1 object versus N objects, alternated frame by frame
    objects = {}
    if a.objects:
        trackers = {1: sam2s.VideoTracker(ours, frames_dir, **tracker_kw)}
        trackers[a.objects] = sam2s.VideoTracker(ours, frames_dir, **tracker_kw)
        for n, tr in trackers.items():
            for prompt in prompts[:n]:
                add_ours(tr, prompt)
        gens = {n: tr.propagate() for n, tr in trackers.items()}
        times = {n: [] for n in trackers}
        for _ in range(a.frames):
            for n, g in gens.items():
                times[n].append(timed_step(g)[0])
        for g in gens.values():
            g.close()
        objects = {
            "prompts": [p[3] for p in prompts[: a.objects]],
            "median_s": {n: median(ts[1:]) for n, ts in times.items()},
            "total_s": {n: sum(ts) for n, ts in times.items()},
        }

    tracked = a.frames - 1
    return {
        "config": a.config,
        "image_size": a.image_size,
        "frames": a.frames,
        "threads": a.threads,
        "clip": clip,
        "prompts": [p[3] for p in prompts[:2]],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "precision": {"reference": "fp32", "sam2s": precision},
        "autocast_left_enabled_after_sam2s_steps": autocast_leaks,
        "prompt_s": prompt_s,
        "step_s": steps,
        "median_s": {k: median(v[1:]) for k, v in steps.items()},
        "total_s": {k: sum(v) for k, v in steps.items()},
        "components_s_per_frame": {k: v / tracked for k, v in component_s.items()},
        "components_gflop_per_frame": {k: v / tracked / 1e9 for k, v in component_flops.items()},
        "gflop_per_frame": [f / 1e9 for f in flops],
        "attention_gflop_per_frame": [f / 1e9 for f in attention],
        "matmul_gflops": rates.summary(),
        "objects": objects,
        "versus": None
        if versus is None
        else {
            "config": a.versus,
            "precision": resolved_precision(a.precision, versus),
            "gflop_per_frame": [f / 1e9 for f in versus_flops],
            "attention_gflop_per_frame": [f / 1e9 for f in versus_attention],
        },
    }


def report(a, r: dict) -> None:
    ref_m, our_m = r["median_s"]["reference"], r["median_s"]["sam2s"]
    ref_t, our_t = r["total_s"]["reference"], r["total_s"]["sam2s"]
    print(
        f"{r['config']} at {r['image_size']} px, {r['clip']}, {r['frames']} frames, 2 objects "
        f"({', '.join(r['prompts'])}), {r['threads']} threads, torch {r['torch']}"
    )
    print(f"precision: reference fp32 (Meta on CPU), sam2s {r['precision']['sam2s']}")
    if r["autocast_left_enabled_after_sam2s_steps"]:
        print("WARNING: sam2s left CPU autocast enabled across a yield of propagate()")
    print("alternated frame by frame; median over tracked frames 1..T-1, total = all propagation steps")
    print(f"{'':11}{'prompts s':>10}{'frame 0 s':>10}{'median s/f':>11}{'total s':>9}{'total s/f':>10}")
    for side in ("reference", "sam2s"):
        s = r["step_s"][side]
        row = f"{side:11}{r['prompt_s'][side]:10.3f}{s[0]:10.3f}{median(s[1:]):11.3f}{sum(s):9.3f}"
        print(row + f"{sum(s) / len(s):10.3f}")
    print(f"speed-up of sam2s: {ref_m / our_m:.2f}x median, {ref_t / our_t:.2f}x total")
    v = r.get("versus")
    if v:
        s = r["step_s"]["versus"]
        vs_m, vs_t = median(s[1:]), sum(s)
        print(
            f"{v['config'] + ' (sam2s)':11}{r['prompt_s']['versus']:10.3f}{s[0]:10.3f}{vs_m:11.3f}{vs_t:9.3f}"
            f"{vs_t / len(s):10.3f}   precision {v['precision']}"
        )
        gf, att = v["gflop_per_frame"][1:], v["attention_gflop_per_frame"][1:]
        ours_gf, ours_att = r["gflop_per_frame"][1:], r["attention_gflop_per_frame"][1:]
        print(
            f"{v['config']} vs sam2s {r['config']}: {our_m / vs_m:.2f}x median, {our_t / vs_t:.2f}x total; "
            f"vs Meta's reference (fp32): {ref_m / vs_m:.2f}x median, {ref_t / vs_t:.2f}x total"
        )
        print(
            f"FLOPs per tracked frame, attention included (of which attention): {r['config']} "
            f"{sum(ours_gf) / len(ours_gf):.1f} ({sum(ours_att) / len(ours_att):.1f}) GFLOP, {v['config']} "
            f"{sum(gf) / len(gf):.1f} ({sum(att) / len(att):.1f}) GFLOP"
        )

    tracked = r["frames"] - 1
    gflop = r["gflop_per_frame"][1:]
    mean_gflop = sum(gflop) / len(gflop)
    busy = sum(r["step_s"]["sam2s"][1:])
    print(f"sam2s components, tracked frames 1..{tracked} (exclusive time from module hooks; FLOPs):")
    print(f"  {'':30}{'s/frame':>8}{'share':>7}{'GFLOP/f':>9}{'GFLOP/s':>9}")
    for k, s in r["components_s_per_frame"].items():
        g = r["components_gflop_per_frame"][k]
        rate = f"{g / s:9.1f}" if s > 0 else f"{'-':>9}"
        print(f"  {k:30}{s:8.3f}{100 * s * tracked / busy:6.1f}%{g:9.2f}{rate}")
    att = r["attention_gflop_per_frame"][1:]
    print(
        f"FLOPs per tracked frame (FlopCounterMode + SDPA attention): min {min(gflop):.2f} / mean "
        f"{mean_gflop:.2f} / max {max(gflop):.2f} GFLOP, of which attention {sum(att) / len(att):.2f} GFLOP"
    )
    mm = r["matmul_gflops"]
    ours_rate = sum(gflop) / busy
    ref_rate = sum(gflop) / sum(r["step_s"]["reference"][1:])
    fp, bf = mm["float32"], mm["bfloat16"]
    print(
        f"CPU matmul 2048x2048, {r['threads']} threads, sampled after each frame pair ({bf['samples']}x): "
        f"fp32 median {fp['median']:.0f} GFLOP/s (range {fp['min']:.0f}-{fp['max']:.0f}), "
        f"bf16 median {bf['median']:.0f} GFLOP/s (range {bf['min']:.0f}-{bf['max']:.0f})"
    )
    print(
        f"achieved: sam2s {ours_rate:.1f} GFLOP/s = {100 * ours_rate / bf['median']:.1f}% of the bf16 mm median "
        f"({100 * ours_rate / fp['median']:.1f}% of fp32); reference {ref_rate:.1f} GFLOP/s "
        f"= {100 * ref_rate / fp['median']:.1f}% of the fp32 mm median (at sam2s's FLOPs)"
    )
    o = r["objects"]
    if o:
        n = max(o["median_s"])
        one, many = o["median_s"][1], o["median_s"][n]
        verdict = ""
        if n == 3 and r["image_size"] == 512:
            verdict = f" (issue 12 acceptance <= 2.00x at 512 px: {'PASS' if many <= 2 * one else 'FAIL'})"
        print(
            f"sam2s objects, alternated: 1 object {one:.3f} s/f, {n} objects {many:.3f} s/f median "
            f"-> {many / one:.2f}x{verdict}; totals {o['total_s'][1]:.2f} s / {o['total_s'][n]:.2f} s"
        )
        print(f"  objects: {', '.join(o['prompts'])}")


if __name__ == "__main__":
    main()
