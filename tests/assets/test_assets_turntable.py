"""Turntable: decodable H.264 MP4 of the right size and length, a sensible preview, cancellation."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from core.assets.cleanup import clean_mesh
from core.assets.gltf import srgb_to_linear
from core.assets.mesh import AssetError, extract_mesh
from core.assets.texture import texture_mesh
from core.assets.turntable import _place, orbit_camera, render_turntable, render_view
from core.fields.analytic import BoxField, SphereField
from core.progress import Cancelled, Reporter


def decode(path) -> tuple[dict, list[np.ndarray]]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    return meta, frames


def test_video_decodes_to_n_frames_of_the_right_size(two_tone_textured, tmp_path) -> None:
    video, preview = render_turntable(
        two_tone_textured, tmp_path / "turntable.mp4", tmp_path / "preview.png", frames=6, size=64, fps=12
    )
    meta, frames = decode(video)
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (64, 64)
    assert meta["fps"] == pytest.approx(12)
    assert len(frames) == 6
    # The first video frame is the preview (up to H.264 + yuv420p loss on flat colours).
    still = np.asarray(Image.open(preview).convert("RGB"), np.float64)
    assert still.shape == (64, 64, 3)
    assert np.abs(frames[0].astype(np.float64) - still).mean() < 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png", "turntable.mp4"]


def test_preview_shows_the_asset_and_its_colours(two_tone_textured, tmp_path) -> None:
    _, preview = render_turntable(
        two_tone_textured, None, tmp_path / "p.png", frames=0, size=96, elevation_deg=0
    )
    img = np.asarray(Image.open(preview).convert("RGB"), np.int64)
    # Camera level with the sphere's centre: the upper half of the disc is lit red, the
    # lower half blue; the corners are the grey background.
    upper, lower, corner = img[30, 48], img[66, 48], img[2, 2]
    assert upper[0] > 2 * upper[2]
    assert lower[2] > 2 * lower[0]
    assert abs(corner[0] - corner[2]) < 12 and corner.max() < 200


def test_orbit_starts_at_the_front_and_turns_counter_clockwise() -> None:
    cam = orbit_camera(np.zeros(3), 2.0, 0.0, 0.0, 64)
    np.testing.assert_allclose(cam.position, [0, -2, 0], atol=1e-12)  # front is -Y
    cam = orbit_camera(np.zeros(3), 2.0, 90.0, 0.0, 64)
    np.testing.assert_allclose(cam.position, [2, 0, 0], atol=1e-12)
    cam = orbit_camera(np.zeros(3), 2.0, 0.0, 30.0, 64)
    assert cam.position[2] == pytest.approx(1.0)  # 2 sin 30
    np.testing.assert_allclose(np.cross(cam.right, cam.up), -cam.forward, atol=1e-12)


def test_odd_sizes_are_padded_to_even(two_tone_textured, tmp_path) -> None:
    video, _ = render_turntable(two_tone_textured, tmp_path / "t.mp4", tmp_path / "p.png", frames=2, size=65)
    meta, frames = decode(video)
    assert meta["size"] == (66, 66) and len(frames) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": -1}, "frames"),
        ({"size": 8}, "size"),
        ({"elevation_deg": 95}, "elevation_deg"),
        ({"fps": 0}, "fps"),
    ],
)
def test_bad_arguments(two_tone_textured, tmp_path, kwargs, message) -> None:
    with pytest.raises(AssetError, match=message):
        render_turntable(two_tone_textured, tmp_path / "t.mp4", tmp_path / "p.png", **kwargs)


def test_cancel_mid_video_leaves_no_video(two_tone_textured, tmp_path) -> None:
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 4  # preview + 3 frames, then stop

    with pytest.raises(Cancelled):
        render_turntable(
            two_tone_textured,
            tmp_path / "t.mp4",
            tmp_path / "p.png",
            frames=20,
            size=64,
            reporter=Reporter(cancel=cancel),
        )
    # The preview was complete before the video started; no video, no temporary file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


class FrontSphere(SphereField):
    """Green on its front half (y below the centre: Kiln fronts face -Y), grey behind."""

    def albedo(self, points):
        front = (np.asarray(points)[:, 1] < self.center[1])[:, None]
        return np.where(front, [0.1, 0.8, 0.1], [0.5, 0.5, 0.5]).astype(np.float32)


def test_the_first_frame_looks_at_the_front() -> None:
    field = FrontSphere(0.5, (0.0, 0.0, 0.5))
    mesh, _ = clean_mesh(extract_mesh(field, 64))
    tm = texture_mesh(field, mesh, 128)
    placed, centre, radius = _place(tm)
    texture = srgb_to_linear(tm.texture.astype(np.float32) / 255)
    distance = 3 * radius
    front = render_view(placed, orbit_camera(centre, distance, 0.0, 0.0, 48), texture)[24, 24]
    back = render_view(placed, orbit_camera(centre, distance, 180.0, 0.0, 48), texture)[24, 24]
    assert front[1] > 2 * front[0] and front[1] > 2 * front[2]  # green
    assert abs(int(back[0]) - int(back[1])) < 10  # grey


def test_the_camera_orbits_the_asset() -> None:
    # A 0.8 x 0.3 (x by y) box is wide from the front and narrow from the side (azimuth 90).
    field = BoxField((0.4, 0.15, 0.2))
    mesh, _ = clean_mesh(extract_mesh(field, 64))
    tm = texture_mesh(field, mesh, 64)
    placed, centre, radius = _place(tm)
    texture = srgb_to_linear(tm.texture.astype(np.float32) / 255)
    widths = []
    for azimuth in (0.0, 90.0):
        img = render_view(placed, orbit_camera(centre, 5 * radius, azimuth, 0.0, 96), texture, supersample=1)
        row = img[48].astype(int)
        widths.append(int((np.abs(row - row[0]).sum(axis=1) > 30).sum()))  # row[0] is background
    # Pinhole at d = 5R = 2.35 m, half field of view 15 deg: the front face (0.8 m wide, at
    # 2.2 m) spans 2 * 0.4 / (2.2 tan 15) * 48 = 65 px; the side face (0.3 m wide, at 1.95 m)
    # spans 2 * 0.15 / (1.95 tan 15) * 48 = 28 px.
    assert abs(widths[0] - 65) <= 3
    assert abs(widths[1] - 28) <= 3
