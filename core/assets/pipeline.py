"""The whole asset path in one call: field -> mesh -> clean -> UV + bake -> GLB + turntable."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.assets.cleanup import clean_mesh
from core.assets.gltf import write_glb
from core.assets.mesh import AssetError, extract_mesh
from core.assets.parts import label_parts, part_counts
from core.assets.rig import RigError, build_rig, vertex_parts
from core.assets.texture import TexturedMesh, texture_mesh
from core.assets.turntable import render_turntable
from core.fields.base import Field
from core.pipelines.jobs import OutputOptions
from core.progress import Reporter

GLB_NAME = "asset.glb"
VIDEO_NAME = "turntable.mp4"
PREVIEW_NAME = "preview.png"


@dataclass
class AssetOptions(OutputOptions):
    """How to turn a field into asset files. ``validate()`` names any field out of range.

    The four fields a job request sets (resolution, texture_size, turntable_frames,
    turntable_size) and their defaults and ranges are the job contract's ``OutputOptions``.
    """

    iso: float | None = None
    """Surface level of the field; None uses the field's default (0 for an SDF)."""
    max_faces: int | None = 50_000
    """Face budget after decimation (>= 1000), or None to keep every marching-cubes face."""
    min_component_fraction: float = 0.01
    """Disconnected pieces with less than this fraction of the total area are dropped, 0..0.5."""
    vertex_colors: bool = False
    """Write albedo as glTF vertex colours (COLOR_0) instead of the texture."""
    turntable_elevation: float = 15.0
    """Camera elevation of the turntable in degrees, -89..89."""
    turntable_fps: int = 24
    """Turntable frames per second, 1..60."""
    rig: bool = False
    """Rig the mesh: bones, skin weights and expression shape keys (``core.assets.rig``) from the
    landmarks ``build_asset`` is given. Avatar jobs turn it on; objects from text are not rigged."""

    @classmethod
    def from_output(cls, output: OutputOptions, **extra: Any) -> AssetOptions:
        """The asset path's options for a job's ``output``, plus any of the other fields."""
        return cls(**dataclasses.asdict(output), **extra)

    def validate(self) -> AssetOptions:
        """Raise AssetError naming the first option out of range; return self when all are fine."""

        def check_int(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise AssetError(f"AssetOptions.{name} must be an integer in {lo}..{hi}, got {value!r}")

        for f in dataclasses.fields(OutputOptions):
            check_int(f.name, f.metadata["ge"], f.metadata["le"])
        check_int("turntable_fps", 1, 60)
        if self.max_faces is not None:
            check_int("max_faces", 1000, 10_000_000)
        if self.iso is not None and not (isinstance(self.iso, int | float) and abs(self.iso) < float("inf")):
            raise AssetError(f"AssetOptions.iso must be None or a finite number, got {self.iso!r}")
        if (
            not isinstance(self.min_component_fraction, int | float)
            or not 0.0 <= self.min_component_fraction <= 0.5
        ):
            raise AssetError(
                f"AssetOptions.min_component_fraction must be in 0..0.5, got {self.min_component_fraction!r}"
            )
        if not isinstance(self.turntable_elevation, int | float) or not -89 <= self.turntable_elevation <= 89:
            raise AssetError(
                f"AssetOptions.turntable_elevation must be in -89..89 degrees, got {self.turntable_elevation!r}"
            )
        if not isinstance(self.rig, bool):
            raise AssetError(f"AssetOptions.rig must be true or false, got {self.rig!r}")
        if not isinstance(self.vertex_colors, bool):
            raise AssetError(f"AssetOptions.vertex_colors must be true or false, got {self.vertex_colors!r}")
        return self


@dataclass
class AssetResult:
    """The files written by ``build_asset`` and figures about them.

    Attributes:
        glb: path of ``asset.glb``.
        video: path of ``turntable.mp4``, or None when ``turntable_frames`` is 0.
        preview: path of ``preview.png``.
        stats: faces, vertices, watertight, charts, texture_size, size_m (x, y, z extent),
            parts (as below), rig (``{"rigged": bool, ...}``: the bones, shape keys and landmarks,
            or the reason there is no rig), cleanup (CleanupReport as a dict) and timings
            (seconds per step).
        parts: faces per material part present in the GLB (``{"skin": 81234, "hair": 40211}``),
            in the field's ``part_names`` order; empty for a field without parts.
    """

    glb: Path
    video: Path | None
    preview: Path
    stats: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)


def rig_mesh(
    mesh: TexturedMesh, landmarks: Callable[[np.ndarray], Any] | None
) -> tuple[TexturedMesh, dict[str, Any]]:
    """``mesh`` with a rig from ``landmarks`` (see ``build_asset``), and the rig's stats entry."""
    if landmarks is None:
        return mesh, {"rigged": False, "reason": "this field has no landmarks to rig from"}
    try:
        estimate = landmarks(mesh.vertices)
        parts = vertex_parts(mesh.num_vertices, mesh.faces, mesh.face_parts, mesh.part_names)
        rig = build_rig(mesh.vertices, estimate.points, estimate.eye_radius, parts)
    except (RigError, ValueError) as e:
        return mesh, {"rigged": False, "reason": f"no rig: {e}"}
    info = {"rigged": True, **rig.info, "landmarks": estimate.to_json()}
    rig.info = info
    return dataclasses.replace(mesh, rig=rig), info


def build_asset(
    field: Field,
    out_dir: Path | str,
    options: AssetOptions | None = None,
    reporter: Reporter | None = None,
    name: str = "asset",
    landmarks: Callable[[np.ndarray], Any] | None = None,
) -> AssetResult:
    """Run the whole asset path on ``field`` and write the artifacts into ``out_dir``.

    Everything is written into a hidden staging folder inside ``out_dir`` and moved to
    ``asset.glb``, ``turntable.mp4`` and ``preview.png`` only at the end, so a failure
    or a cancellation (``core.progress.Cancelled`` from the reporter) leaves none of
    them behind, half-written or not.

    A field with ``part_names`` gets each face labelled by its part, and the GLB one
    material slot per part present (``AssetResult.parts`` counts their faces).

    With ``options.rig`` the mesh is rigged (``core.assets.rig``) from ``landmarks``: a callable
    given the mesh's vertices (Kiln space) that returns the landmark estimate
    (``core.avatar.landmarks.LandmarkEstimate``: ``points``, ``eye_radius``, ``to_json()``).
    Without it, or when the landmarks cannot rig the mesh, the GLB has no rig and
    ``stats["rig"]`` says why.

    Progress slices: extract 0-0.35, cleanup 0.35-0.45, texture 0.45-0.74,
    parts 0.74-0.75 (fields with parts), export 0.75-0.8, turntable 0.8-1.
    """
    options = (options or AssetOptions()).validate()
    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kiln-asset-", dir=out_dir))
    timings: dict[str, float] = {}
    try:
        # 1. Extract the surface.
        t = time.perf_counter()
        mesh = extract_mesh(field, options.resolution, options.iso, reporter.sub(0.0, 0.35))
        timings["extract"] = time.perf_counter() - t
        # 2. Clean up.
        t = time.perf_counter()
        mesh, report = clean_mesh(
            mesh, options.min_component_fraction, options.max_faces, reporter.sub(0.35, 0.45)
        )
        timings["cleanup"] = time.perf_counter() - t
        # 3. Unwrap and bake; label each face by its part (fields with parts).
        t = time.perf_counter()
        textured = texture_mesh(field, mesh, options.texture_size, reporter.sub(0.45, 0.74))
        timings["texture"] = time.perf_counter() - t
        if field.part_names:
            t = time.perf_counter()
            textured = label_parts(field, textured, reporter.sub(0.74, 0.75))
            timings["parts"] = time.perf_counter() - t
        rig_info: dict[str, Any] = {"rigged": False, "reason": "rigging is off"}
        if options.rig:
            t = time.perf_counter()
            reporter("rig", 0.75, "rigging")
            textured, rig_info = rig_mesh(textured, landmarks)
            timings["rig"] = time.perf_counter() - t
        # 4. Export.
        t = time.perf_counter()
        reporter("export", 0.75, "writing GLB")
        glb = write_glb(textured, staging / GLB_NAME, vertex_colors=options.vertex_colors, name=name)
        timings["export"] = time.perf_counter() - t
        # 5. Turntable and preview.
        t = time.perf_counter()
        video, preview = render_turntable(
            textured,
            staging / VIDEO_NAME if options.turntable_frames else None,
            staging / PREVIEW_NAME,
            frames=options.turntable_frames,
            size=options.turntable_size,
            elevation_deg=options.turntable_elevation,
            fps=options.turntable_fps,
            reporter=reporter.sub(0.8, 1.0),
        )
        timings["turntable"] = time.perf_counter() - t
        # 6. Publish: move each finished file under its final name. This is the last
        # reporter call, so a cancellation can no longer land between two renames.
        reporter("publish", 1.0, f"{textured.num_faces} faces, {len(textured.vertices)} vertices")
        final_glb = out_dir / GLB_NAME
        os.replace(glb, final_glb)
        final_video = None
        if video is not None:
            final_video = out_dir / VIDEO_NAME
            os.replace(video, final_video)
        else:
            (out_dir / VIDEO_NAME).unlink(
                missing_ok=True
            )  # a stale video from an earlier build would mislead
        final_preview = out_dir / PREVIEW_NAME
        os.replace(preview, final_preview)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size_m = (textured.vertices.max(axis=0) - textured.vertices.min(axis=0)).tolist()
    parts = {} if textured.face_parts is None else part_counts(textured.part_names, textured.face_parts)
    stats = {
        "faces": textured.num_faces,
        "vertices": textured.num_vertices,
        "watertight": report.watertight,
        "texture_size": options.texture_size,
        "size_m": [round(float(s), 6) for s in size_m],
        "parts": parts,
        "rig": rig_info,
        "cleanup": asdict(report),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    return AssetResult(glb=final_glb, video=final_video, preview=final_preview, stats=stats, parts=parts)
