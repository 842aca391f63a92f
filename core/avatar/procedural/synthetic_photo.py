"""Front-on "photos" of engine avatars, rendered by sphere tracing, for testing the photo reader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.fields.base import Field


@dataclass(frozen=True)
class PhotoLighting:
    """Lighting and backdrop of one synthetic photo."""

    key_direction: tuple[float, float, float] = (-0.4, -1.0, 0.6)
    """Direction from the subject towards the key light (world space, normalised on use)."""
    key_strength: float = 0.75
    """Lambertian weight of the key light."""
    ambient: float = 0.35
    """Light reaching every surface regardless of its normal."""
    exposure: float = 1.0
    """Overall multiplier on the shaded colour (under/over-exposed photos)."""
    background_top: tuple[float, float, float] = (0.75, 0.78, 0.82)
    """Backdrop colour at the top edge of the frame (RGB in [0, 1])."""
    background_bottom: tuple[float, float, float] = (0.55, 0.58, 0.62)
    """Backdrop colour at the bottom edge of the frame."""
    noise: float = 0.01
    """Standard deviation of per-pixel sensor noise added to the final image."""


@dataclass(frozen=True)
class PhotoCamera:
    """A pinhole camera on the -Y side of the avatar looking at its face."""

    size: int = 256
    """Width and height of the square image in pixels."""
    distance: float = 1.0
    """Metres from the camera to the look-at point along +Y."""
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.04)
    """World point at the centre of the image (the avatar's head centre is near z = 0.1)."""
    view_height: float = 0.56
    """Height in metres of the frame at the look-at distance (head and shoulders)."""


def random_lighting(rng: np.random.Generator) -> PhotoLighting:
    """Varied but photo-like lighting and a random plain or two-tone backdrop."""
    side = rng.uniform(-0.8, 0.8)
    top = rng.uniform(0.1, 0.9)
    base = rng.uniform(0.1, 0.95, 3)
    second = np.clip(base + rng.normal(0.0, 0.12, 3), 0.0, 1.0)
    return PhotoLighting(
        key_direction=(float(side), -1.0, float(top)),
        key_strength=float(rng.uniform(0.55, 0.85)),
        ambient=float(rng.uniform(0.25, 0.45)),
        exposure=float(rng.uniform(0.9, 1.15)),
        background_top=tuple(float(v) for v in base),
        background_bottom=tuple(float(v) for v in second),
        noise=float(rng.uniform(0.0, 0.02)),
    )


def _rays(cam: PhotoCamera) -> tuple[np.ndarray, np.ndarray]:
    """Ray origin (3,) and unit directions (S*S, 3), row-major from the image's top-left."""
    s = cam.size
    look = np.asarray(cam.look_at, np.float64)
    origin = look - np.array([0.0, cam.distance, 0.0])
    half = cam.view_height / 2
    # Pixel centres on the image plane through the look-at point; rows go down (-Z).
    u = (np.arange(s) + 0.5) / s * 2 - 1
    xs, zs = np.meshgrid(u * half, -u * half)
    target = np.stack([look[0] + xs, np.full_like(xs, look[1]), look[2] + zs], -1).reshape(-1, 3)
    d = target - origin
    return origin, d / np.linalg.norm(d, axis=1, keepdims=True)


def _box_hits(
    origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distance of each ray through the box (slab test); entry > exit means a miss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t0 = (lo - origin) * inv
        t1 = (hi - origin) * inv
    near = np.nanmax(np.minimum(t0, t1), axis=1)
    far = np.nanmin(np.maximum(t0, t1), axis=1)
    return np.maximum(near, 0.0), far


def sphere_trace(
    field: Field, cam: PhotoCamera, max_steps: int = 96, step_scale: float = 0.85, eps: float = 4e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Find the first surface point along each camera ray.

    ``step_scale`` < 1 because the engine's ellipsoid and smooth-min distances are bounds that
    can overshoot slightly.

    Returns:
        hit: (S*S,) bool, whether the ray met the surface.
        points: (S*S, 3) float64 surface points (undefined where ``hit`` is False).
    """
    origin, dirs = _rays(cam)
    lo = np.asarray(field.bbox_min, np.float64)
    hi = np.asarray(field.bbox_max, np.float64)
    t, far = _box_hits(origin, dirs, lo, hi)
    active = np.nonzero(t < far)[0]
    hit = np.zeros(len(dirs), bool)
    for _ in range(max_steps):
        if len(active) == 0:
            break
        p = origin + dirs[active] * t[active, None]
        d = field.value(p.astype(np.float32)).astype(np.float64)
        done = d < eps
        hit[active[done]] = True
        t[active] += np.where(done, 0.0, np.maximum(d * step_scale, eps * 0.5))
        active = active[~done & (t[active] < far[active])]
    return hit, origin + dirs * t[:, None]


def _normals(field: Field, p: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Unit SDF gradients at points (N, 3) by central differences -> (N, 3)."""
    offsets = np.eye(3) * h
    grad = np.zeros_like(p)
    for i in range(3):
        plus = field.value((p + offsets[i]).astype(np.float32))
        minus = field.value((p - offsets[i]).astype(np.float32))
        grad[:, i] = plus - minus
    return grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)


def render_photo(
    field: Field,
    lighting: PhotoLighting | None = None,
    camera: PhotoCamera | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render ``field`` front-on as an sRGB-looking photo.

    Shading is ambient + Lambertian from one key light on the field's albedo (no shadows),
    over a vertical two-tone gradient backdrop, plus optional sensor noise.

    Returns:
        (S, S, 3) uint8 image, the avatar's face looking at the camera.
    """
    light = lighting or PhotoLighting()
    cam = camera or PhotoCamera()
    rng = rng or np.random.default_rng(0)
    s = cam.size

    # 1. Backdrop: a vertical gradient.
    v = np.linspace(0.0, 1.0, s)[:, None, None]
    image = (1 - v) * np.asarray(light.background_top) + v * np.asarray(light.background_bottom)
    image = np.broadcast_to(image, (s, s, 3)).reshape(-1, 3).copy()

    # 2. Surface points, normals and albedo.
    hit, points = sphere_trace(field, cam)
    p = points[hit]
    if len(p):
        n = _normals(field, p)
        key = np.asarray(light.key_direction, np.float64)
        key = key / np.linalg.norm(key)
        lambert = np.clip(n @ key, 0.0, 1.0)
        albedo = field.albedo(p.astype(np.float32)).astype(np.float64)
        shade = (light.ambient + light.key_strength * lambert)[:, None]
        image[hit] = albedo * shade * light.exposure

    # 3. Sensor noise and quantisation.
    if light.noise > 0:
        image = image + rng.normal(0.0, light.noise, image.shape)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).reshape(s, s, 3)
