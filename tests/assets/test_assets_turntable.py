"""Turntable: decodable H.264 MP4 of the right size and length, a sensible preview, cancellation."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from core.assets.mesh import AssetError
from core.assets.turntable import orbit_camera, render_turntable
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
