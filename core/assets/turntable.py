"""Turntable video and preview of a textured mesh, rendered with the numpy rasteriser (no Blender)."""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.assets.gltf import FILE_MODE, atomic_write, ground_and_centre, srgb_to_linear
from core.assets.mesh import AssetError
from core.assets.raster import nearest_per_pixel, rasterize
from core.assets.texture import TexturedMesh
from core.progress import Reporter

FOV_DEG = 30.0
# Light directions in camera space (x right, y up, z toward the viewer), fixed to the camera
# so the object turns under a steady key light, as on a photo turntable.
KEY_LIGHT = np.array([-0.45, 0.55, 0.70])
FILL_LIGHT = np.array([0.6, -0.1, 0.8])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking at ``target``.

    Attributes:
        position: (3,) world position.
        right, up, forward: (3,) orthonormal world axes of the camera (forward looks at the target).
        focal: focal length in pixels.
        width, height: image size in pixels.
    """

    position: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    focal: float
    width: int
    height: int


def orbit_camera(
    target: np.ndarray, distance: float, azimuth_deg: float, elevation_deg: float, size: int
) -> Camera:
    """Camera on a sphere around ``target``; azimuth 0 looks at the front (from -Y), Z is up."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    offset = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    position = np.asarray(target, np.float64) + distance * offset
    forward = -offset
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    focal = (size / 2) / math.tan(math.radians(FOV_DEG) / 2)
    return Camera(position, right, up, forward, focal, size, size)


def _bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) float ``texture`` at (N, 2) glTF UVs (v down), clamped to the edge."""
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def _background(size: int) -> np.ndarray:
    """(size, size, 3) linear RGB: a soft studio gradient, lighter at the top."""
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    top, bottom = np.array([0.42, 0.43, 0.45]), np.array([0.16, 0.16, 0.17])
    return np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()


def render_view(
    mesh: TexturedMesh, camera: Camera, texture_linear: np.ndarray, supersample: int = 2
) -> np.ndarray:
    """Render one (H, W, 3) uint8 sRGB frame of ``mesh`` (already placed) seen by ``camera``.

    Steps: back-face cull, project, rasterise at ``supersample`` x resolution with a
    z-buffer on 1/z, interpolate UVs and normals perspective-correctly, shade with the
    baked albedo under a key + fill light, box-filter down.
    """
    ss = max(1, int(supersample))
    width, height, focal = camera.width * ss, camera.height * ss, camera.focal * ss
    verts = mesh.vertices.astype(np.float64)
    faces = mesh.faces
    # 1. Cull faces turned away from the camera (CCW from outside), then project.
    tri = verts[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    facing = np.einsum("ij,ij->i", face_n, camera.position - tri.mean(axis=1)) > 0
    faces = faces[facing]
    rel = verts - camera.position
    xc, yc, zc = rel @ camera.right, rel @ camera.up, rel @ camera.forward
    if np.any(zc[faces] <= 1e-6):
        raise AssetError("the camera is inside the asset; this should not happen with orbit_camera")
    sx = xc / zc * focal + width / 2
    sy = -yc / zc * focal + height / 2
    screen = np.stack([sx, sy], axis=1)[faces]  # (F, 3, 2)
    # 2. Rasterise; keep the nearest fragment per pixel (largest interpolated 1/z).
    frags = rasterize(screen, width, height)
    inv_z = 1.0 / zc[faces]  # (F, 3)
    w = frags.bary * inv_z[frags.face]  # perspective weights
    frag_inv_z = w.sum(axis=1)
    keep = nearest_per_pixel(frags, depth=-frag_inv_z)
    pix, face = frags.pixel[keep], frags.face[keep]
    w = w[keep] / frag_inv_z[keep][:, None]
    # 3. Interpolate attributes and shade in linear light.
    corners = faces[face]  # (K, 3)
    uv = np.einsum("kc,kcd->kd", w, mesh.uvs[corners].astype(np.float64))
    normal = np.einsum("kc,kcd->kd", w, mesh.normals[corners].astype(np.float64))
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    n_cam = np.stack([normal @ camera.right, normal @ camera.up, -(normal @ camera.forward)], axis=1)
    key = KEY_LIGHT / np.linalg.norm(KEY_LIGHT)
    fill = FILL_LIGHT / np.linalg.norm(FILL_LIGHT)
    light = 0.25 + 0.75 * np.clip(n_cam @ key, 0, None) + 0.25 * np.clip(n_cam @ fill, 0, None)
    albedo = _bilinear(texture_linear, uv)
    image = _background(width).reshape(-1, 3)
    image[pix] = albedo * light[:, None]
    image = image.reshape(height, width, 3)
    # 4. Antialias by averaging ss x ss blocks.
    if ss > 1:
        image = image.reshape(camera.height, ss, camera.width, ss, 3).mean(axis=(1, 3))
    return np.round(_linear_to_srgb(image) * 255).astype(np.uint8)


def _place(mesh: TexturedMesh) -> tuple[TexturedMesh, np.ndarray, float]:
    """Grounded, centred copy of ``mesh`` (as in the GLB) with its bounding sphere (centre, radius)."""
    verts = mesh.vertices + ground_and_centre(mesh.vertices)
    placed = TexturedMesh(verts, mesh.faces, mesh.uvs, mesh.normals, mesh.texture, mesh.colors)
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    radius = float(np.linalg.norm(verts - centre, axis=1).max())
    return placed, centre, max(radius, 1e-6)


def _png_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def render_turntable(
    mesh: TexturedMesh,
    mp4_path: Path | str | None,
    preview_path: Path | str,
    frames: int = 36,
    size: int = 256,
    elevation_deg: float = 15.0,
    fps: int = 24,
    reporter: Reporter | None = None,
    supersample: int = 2,
) -> tuple[Path | None, Path]:
    """Render a turntable MP4 (H.264, yuv420p) and a front-view preview PNG.

    The asset is placed as in the GLB (centred, on the ground) and a camera orbits it
    once at ``elevation_deg``, starting from the front (-Y), framed so the bounding
    sphere fills the view. Frames go straight to ffmpeg (imageio-ffmpeg) under a temporary
    name; the files appear under their final names only once complete, and a
    cancellation (checked every frame) kills ffmpeg and leaves no partial file.

    Args:
        mesh: the textured mesh.
        mp4_path: where to write the video; ``None`` or ``frames == 0`` renders only the preview.
        preview_path: where to write the preview PNG (the first frame).
        frames: frames in one full turn, 0..3600.
        size: square frame size in pixels, 16..2048; odd sizes are padded by one pixel
            in the video (yuv420p needs even sizes).
        elevation_deg: camera height angle, -89..89.
        fps: frames per second, 1..120.
        reporter: progress ("turntable") and cancellation.
        supersample: antialiasing factor per axis.

    Returns:
        (video path or None, preview path).
    """
    reporter = reporter or Reporter()
    # 1. Check inputs.
    if isinstance(frames, bool) or not 0 <= int(frames) <= 3600:
        raise AssetError(f"frames must be in 0..3600, got {frames!r}")
    if isinstance(size, bool) or not 16 <= int(size) <= 2048:
        raise AssetError(f"size must be in 16..2048 pixels, got {size!r}")
    if not -89.0 <= float(elevation_deg) <= 89.0:
        raise AssetError(f"elevation_deg must be in -89..89, got {elevation_deg!r}")
    if isinstance(fps, bool) or not 1 <= int(fps) <= 120:
        raise AssetError(f"fps must be in 1..120, got {fps!r}")
    frames, size, fps = int(frames), int(size), int(fps)
    placed, centre, radius = _place(mesh)
    distance = radius / math.sin(math.radians(FOV_DEG) / 2) * 1.05
    texture_linear = srgb_to_linear(mesh.texture.astype(np.float32) / 255.0)

    def frame(i: int, count: int) -> np.ndarray:
        cam = orbit_camera(centre, distance, 360.0 * i / max(count, 1), elevation_deg, size)
        return render_view(placed, cam, texture_linear, supersample)

    # 2. Preview: the front view.
    preview_path = Path(preview_path)
    reporter("turntable", 0.0, "rendering preview")
    first = frame(0, frames)
    atomic_write(preview_path, _png_bytes(first))
    if mp4_path is None or frames == 0:
        reporter("turntable", 1.0, "preview written")
        return None, preview_path

    # 3. Video: stream frames into ffmpeg under a temporary name.
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - install problem
        raise ImportError("the turntable video needs imageio-ffmpeg: pip install imageio-ffmpeg") from exc
    mp4_path = Path(mp4_path)
    mp4_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{mp4_path.stem}.", suffix=".part.mp4", dir=mp4_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    even = size + (size % 2)
    writer = None  # started with the first frame, so a cancel before it leaves no ffmpeg behind
    finished = False
    try:
        for i in range(frames):
            reporter("turntable", (i + 1) / (frames + 1), f"frame {i + 1}/{frames}")
            img = first if i == 0 else frame(i, frames)
            if even != size:
                img = np.pad(img, ((0, 1), (0, 1), (0, 0)), mode="edge")
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(tmp),
                    (even, even),
                    fps=fps,
                    codec="libx264",
                    pix_fmt_in="rgb24",
                    pix_fmt_out="yuv420p",
                    quality=7,
                    macro_block_size=2,
                    ffmpeg_log_level="error",
                    output_params=["-movflags", "+faststart"],
                )
                writer.send(None)
            writer.send(np.ascontiguousarray(img))
        writer.close()
        finished = True
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, mp4_path)
    finally:
        if writer is not None and not finished:
            # Closing a generator mid-stream makes imageio-ffmpeg stop ffmpeg.
            writer.close()
        tmp.unlink(missing_ok=True)
    reporter("turntable", 1.0, f"{frames} frames written")
    return mp4_path, preview_path
