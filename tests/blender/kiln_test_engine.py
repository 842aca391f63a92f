"""A tiny real engine for the add-on's end-to-end tests: a textured box as a GLB, in milliseconds.

The server loads it with ``--engine kiln_test_box=tests.blender.kiln_test_engine:run_job``, so the
add-on's whole path (HTTP, download, glTF import, material, turntable) runs against a real server
process before the avatar engine is installed. The box is 0.4 x 0.3 x 0.5 m (Z up) and its
base-colour texture is a 16 x 16 PNG whose colour comes from the seed, or for a photo job
(registered as ``photo_avatar=...:run_job``) the photo's mean colour, so a test can see the
uploaded bytes arrived. A prompt holding
``__slow__`` reports progress for ``KILN_TEST_SLOW_S`` seconds first (default 30), so a test
can kill the server mid-job, and with ``KILN_TEST_PREVIEW_S`` set writes a new progress image
that often; ``__fail__`` fails the job with a reason.

A photo job, or a job with attribute overrides, also writes ``attributes.json`` in the shape the
avatar and photo_avatar pipelines give it (the prompt read by the real prompt parser; the photo
"read" as skin_tone=tan, sure, and glasses=round, too unsure to use), so the add-on's display
and provenance of it run against a real server.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.pipelines.jobs import JobError
from core.progress import Reporter

SIZE = (0.4, 0.3, 0.5)


def box_mesh(size: tuple[float, float, float] = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (24, 3), faces (12, 3) and UVs (24, 2) of a box with its base at z=0, one quad per side."""
    sx, sy, sz = (s / 2 for s in size)
    corners = np.array(
        [[x, y, z] for z in (0.0, 2 * sz) for y in (-sy, sy) for x in (-sx, sx)], np.float32
    )  # index = x + 2y + 4z
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    verts, faces, uvs = [], [], []
    for q in quads:
        base = len(verts)
        verts.extend(corners[list(q)])
        uvs.extend([(0, 0), (1, 0), (1, 1), (0, 1)])
        faces.extend([(base, base + 1, base + 2), (base, base + 2, base + 3)])
    return np.array(verts, np.float32), np.array(faces, np.int64), np.array(uvs, np.float32)


def texture_png(seed: int, edge: int = 16, photo: Path | None = None) -> bytes:
    """The box's texture: a colour from the seed, or the mean colour of the uploaded photo."""
    from PIL import Image

    if photo is not None:
        colour = np.asarray(Image.open(photo).convert("RGB"), np.float64).reshape(-1, 3).mean(0).round()
        colour = colour.astype(np.uint8)
    else:
        colour = (np.random.default_rng(seed).uniform(0.2, 0.9, 3) * 255).astype(np.uint8)
    pixels = np.broadcast_to(colour, (edge, edge, 3)).copy()
    pixels[::4] //= 2  # stripes, so the texture is visibly an image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_glb(path: Path, seed: int, photo: Path | None = None) -> None:
    import trimesh
    from PIL import Image

    verts, faces, uvs = box_mesh()
    image = Image.open(io.BytesIO(texture_png(seed, photo=photo)))
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=image, metallicFactor=0.0, roughnessFactor=0.8
    )
    mesh = trimesh.Trimesh(verts, faces, process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    # glTF is Y-up; trimesh writes what it is given, so turn Z-up into Y-up (x, z, -y).
    mesh.apply_transform(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float))
    tmp = path.with_name("." + path.name)
    tmp.write_bytes(mesh.export(file_type="glb"))
    os.replace(tmp, path)


def run_job(job: Any, work_dir: Path, reporter: Reporter, settings: Any = None) -> dict[str, Path]:
    params = job.to_dict()
    prompt = str(params.get("prompt", ""))
    if "__fail__" in prompt:
        raise JobError("the test engine was asked to fail; remove __fail__ from the prompt")
    if "__slow__" in prompt:
        total = float(os.environ.get("KILN_TEST_SLOW_S", "30"))
        every = float(os.environ.get("KILN_TEST_PREVIEW_S", "0"))
        start, shown = time.monotonic(), -1
        while (elapsed := time.monotonic() - start) < total:
            reporter("wait", 0.9 * elapsed / total, f"waiting {elapsed:.0f}/{total:.0f} s")
            if every > 0 and int(elapsed / every) > shown:  # a new progress image, as text_to_3d does
                shown = int(elapsed / every)
                write_progress_preview(work_dir, shown)
            time.sleep(0.05)
    reporter("export", 0.95, "writing asset.glb")
    out = work_dir / "asset.glb"
    photo = params.get("photo_path")
    write_glb(out, int(params.get("seed") or 0), Path(photo) if photo else None)
    artifacts = {"asset.glb": out}
    if photo or params.get("attributes"):
        artifacts["attributes.json"] = write_attributes(params, work_dir, bool(photo))
    reporter("done", 1.0, "finished")
    return artifacts


def write_progress_preview(work_dir: Path, index: int, edge: int = 8) -> Path:
    """``progress.png`` (``core.pipelines.jobs.PROGRESS_PREVIEW``), replaced whole: grey level
    ``index * 40`` (mod 256) so a test can tell the images apart."""
    from PIL import Image

    from core.pipelines.jobs import PROGRESS_PREVIEW

    buf = io.BytesIO()
    Image.new("RGB", (edge, edge), ((index * 40) % 256,) * 3).save(buf, format="PNG")
    path = work_dir / PROGRESS_PREVIEW
    tmp = path.with_name(".progress.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def write_attributes(params: dict[str, Any], work_dir: Path, photo: bool) -> Path:
    """attributes.json through the avatar jobs' own record, with a fixed photo reading for photos."""
    from core.avatar.reading import PhotoReading, Reading
    from core.avatar.record import AvatarRecord
    from core.avatar.vocab.resolve import resolve

    reading = None
    if photo:
        reading = PhotoReading(
            readings={"skin_tone": Reading("tan", 0.9, "test"), "glasses": Reading("round", 0.3, "test")},
            face_box=(0.0, 0.0, 1.0, 1.0),
            landmarks=np.zeros((478, 2)),
            warnings=("the face is small in the photo",),
        )
    resolved = resolve(str(params.get("prompt") or ""), dict(params.get("attributes") or {}), reading)
    record = AvatarRecord.build(
        str(params.get("prompt") or ""),
        resolved,
        {},
        int(params.get("seed") or 0),
        None,
        None,
        photo=reading.to_json() if reading is not None else None,
    )
    return record.write(work_dir)
