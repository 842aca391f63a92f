"""Test engines for the server: a slow one with checkpointed steps, and a fast one.

Registered with ``--engine slow=tests.server.slow_engine:run_slow_job``. The slow engine
"optimises" the radius of a sphere in ``KILN_SLOW_STEPS`` steps of ``KILN_SLOW_STEP_S``
seconds, saving a checkpoint after each step, then builds a real asset (GLB, turntable
MP4, preview PNG) from the analytic field with ``core.assets.build_asset`` when that is
installed, else with trimesh/Pillow/imageio-ffmpeg directly. ``attributes.json`` records
which process ran which step, so tests can prove that a job killed mid-run resumed from
its checkpoint instead of starting over.

``KILN_SLOW_BUSY=1`` makes the steps burn CPU (for bench/server.py). Prompts holding ``__crash__``
(worker dies by SIGKILL), ``__fail__`` (JobError),
``__error__`` (an engine bug), ``__fill__`` (fills the disk at step 3, once) or ``__stubborn__``
(ignores cancellation) exercise the server's failure paths.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.fields.base import Field
from core.pipelines.jobs import JobError
from core.progress import Reporter

RADIUS_START, RADIUS_TARGET = 0.2, 0.5
"""The sphere radius moves from START halfway to TARGET each step (deterministic)."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SphereField(Field):
    """A sphere SDF at the origin with a colour that varies with height (Z up)."""

    kind = "sdf"

    def __init__(self, radius: float, colour: tuple[float, float, float]) -> None:
        self.radius = float(radius)
        self.colour = np.asarray(colour, np.float32)
        self.bbox_min = np.full(3, -0.6, np.float32)
        self.bbox_max = np.full(3, 0.6, np.float32)

    def value(self, points: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(points, axis=-1) - self.radius).astype(np.float32)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        shade = 0.6 + 0.4 * np.clip(points[:, 2:3] / max(self.radius, 1e-6), -1.0, 1.0)
        return np.clip(self.colour[None, :] * shade, 0.0, 1.0).astype(np.float32)


def _sleep(seconds: float, reporter: Reporter, stubborn: bool) -> None:
    """Wait ``seconds``, checking for cancellation; with KILN_SLOW_BUSY=1 keep a CPU busy instead."""
    busy = os.environ.get("KILN_SLOW_BUSY") == "1"
    a = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not stubborn:
            reporter.check()
        if busy:
            a = np.tanh(a @ a.T * 1e-2)  # ~ms of BLAS work per check, like an optimiser step
        else:
            time.sleep(0.02)


def _export_fallback(
    field: SphereField, out: Path, output: dict[str, Any], reporter: Reporter
) -> dict[str, Path]:
    """GLB, preview and turntable without core.assets (used until it is installed)."""
    import imageio_ffmpeg
    import trimesh
    from PIL import Image

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=field.radius)
    colours = (field.albedo(mesh.vertices.astype(np.float32)) * 255).astype(np.uint8)
    mesh.visual.vertex_colors = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    files = {"asset.glb": out / "asset.glb", "preview.png": out / "preview.png"}
    _write_atomic(files["asset.glb"], mesh.export(file_type="glb"))
    reporter("export", 0.4, "wrote asset.glb")
    size = 64
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    disc = (xx**2 + yy**2) <= (field.radius / 0.6) ** 2
    frame = np.where(disc[..., None], (field.colour * 255).astype(np.uint8), np.uint8(40))
    preview_tmp = out / ".preview.png.tmp"
    Image.fromarray(frame.astype(np.uint8)).save(preview_tmp, format="PNG")
    os.replace(preview_tmp, files["preview.png"])
    frames = int(output.get("turntable_frames", 0))
    if frames:
        video_tmp = out / ".turntable.tmp.mp4"
        writer = imageio_ffmpeg.write_frames(str(video_tmp), (size, size), fps=12, macro_block_size=16)
        writer.send(None)
        for i in range(frames):
            writer.send(np.ascontiguousarray(np.roll(frame, i, axis=1)))
            reporter("turntable", 0.5 + 0.5 * (i + 1) / frames, f"frame {i + 1}/{frames}")
        writer.close()
        files["turntable.mp4"] = out / "turntable.mp4"
        os.replace(video_tmp, files["turntable.mp4"])
    return files


def _export(field: SphereField, out: Path, params: dict[str, Any], reporter: Reporter) -> dict[str, Path]:
    output = params.get("output", {})
    try:
        from core.assets import AssetOptions, build_asset
    except ImportError:
        return _export_fallback(field, out, output, reporter)
    options = AssetOptions(
        resolution=min(int(output.get("resolution", 64)), 64),
        texture_size=min(int(output.get("texture_size", 256)), 256),
        turntable_frames=min(int(output.get("turntable_frames", 8)), 8),
        turntable_size=min(int(output.get("turntable_size", 64)), 64),
    )
    result = build_asset(field, out, options, reporter)
    files = {"asset.glb": Path(result.glb), "preview.png": Path(result.preview)}
    if result.video is not None:
        files["turntable.mp4"] = Path(result.video)
    return files


def _fill_the_disk(work_dir: Path) -> None:
    """Once per job: write ``filler.bin`` until the disk is full, and leave it there."""
    marker = work_dir / "filled"
    if marker.exists():
        return
    marker.touch()
    fd = os.open(work_dir / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096):  # megabytes, then the last pages
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def run_slow_job(job: Any, work_dir: Path, reporter: Reporter, settings: Any = None) -> dict[str, Path]:
    """Checkpointed steps then a real asset; see the module docstring."""
    params = job.to_dict()
    steps = int(os.environ.get("KILN_SLOW_STEPS", "6"))
    step_s = float(os.environ.get("KILN_SLOW_STEP_S", "0.3"))
    prompt = params.get("prompt", "")
    stubborn = "__stubborn__" in prompt

    # 1. Resume from the checkpoint when there is one.
    ckpt = work_dir / "checkpoints" / "state.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "radius": RADIUS_START, "log": []}
    if state["step"]:
        reporter("resume", state["step"] / steps * 0.7, f"resumed at step {state['step'] + 1}/{steps}")

    # 2. Optimise: one checkpoint per step, written atomically after the step.
    for step in range(state["step"], steps):
        reporter("optimise", step / steps * 0.7, f"step {step + 1}/{steps}")
        if "__crash__" in prompt:
            os.kill(os.getpid(), signal.SIGKILL)
        if "__fail__" in prompt:
            raise JobError("the test engine was asked to fail; remove __fail__ from the prompt")
        if "__error__" in prompt:
            raise ZeroDivisionError("a deliberate engine bug")
        if "__fill__" in prompt and step == 2:
            _fill_the_disk(work_dir)
        _sleep(60.0 if stubborn else step_s, reporter, stubborn)
        state["radius"] += 0.5 * (RADIUS_TARGET - state["radius"])
        state["log"].append({"step": step, "pid": os.getpid()})
        state["step"] = step + 1
        _write_atomic(ckpt, json.dumps(state).encode())

    # 3. A real asset from the analytic field.
    rng = np.random.default_rng(int(params.get("seed", 0)))
    field = SphereField(state["radius"], tuple(rng.uniform(0.2, 0.9, 3)))
    files = _export(field, work_dir / "out", params, reporter.sub(0.7, 0.98))
    record = {"steps": state["log"], "radius": state["radius"], "params": params, "pid": os.getpid()}
    if params.get("photo_path"):
        record["photo_bytes"] = Path(params["photo_path"]).stat().st_size
    files["attributes.json"] = work_dir / "out" / "attributes.json"
    _write_atomic(files["attributes.json"], json.dumps(record).encode())
    reporter("done", 1.0, "finished")
    return files


def run_fast_job(job: Any, work_dir: Path, reporter: Reporter, settings: Any = None) -> dict[str, Path]:
    """A job of a few milliseconds that returns only attributes.json echoing its params."""
    params = job.to_dict()
    reporter("echo", 0.5, "echoing")
    path = work_dir / "attributes.json"
    record = {
        "params": params,
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    _write_atomic(path, json.dumps(record).encode())
    reporter("echo", 1.0, "done")
    return {"attributes.json": path}
