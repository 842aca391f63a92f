"""Cameras, volume rendering maths, occupancy skipping, early termination, shading, normals."""

from __future__ import annotations

import math

import pytest
import torch

from core.fields.nerf import NeRFField, NeRFFieldConfig
from core.guidance.targets import asymmetric_shape, sphere_shape
from core.render.background import FixedBackground
from core.render.cameras import CameraConfig, camera_rays, orbit_cameras, sample_cameras
from core.render.occupancy import OccupancyConfig, OccupancyGrid
from core.render.shading import Shading, albedo_shading, shade
from core.render.volume import RendererConfig, VolumeRenderer


class ConstantField(torch.nn.Module):
    """Density ``sigma`` everywhere in the box, grey albedo."""

    def __init__(self, sigma: float, bound: float = 0.5) -> None:
        super().__init__()
        self.sigma = sigma
        self.bound = bound

    def density(self, x):
        return torch.full((x.shape[0],), self.sigma)

    def forward(self, x):
        return self.density(x), torch.full((x.shape[0], 3), 0.5)

    def normals(self, x, density=None):
        return torch.nn.functional.normalize(x, dim=-1)


def _cams(az_deg, el_deg, radius=2.0, fov_deg=50.0):
    n = len(az_deg)
    return orbit_cameras(
        torch.deg2rad(torch.tensor(az_deg, dtype=torch.float32)),
        torch.deg2rad(torch.tensor(el_deg, dtype=torch.float32)),
        torch.full((n,), radius),
        torch.full((n,), math.radians(fov_deg)),
        CameraConfig(),
    )


def _render(field, cams, size, renderer, shading=None, occupancy=None):
    origins, dirs = camera_rays(cams, size, size)
    b = len(cams)
    return renderer.render(
        field,
        origins.reshape(-1, 3),
        dirs.reshape(-1, 3),
        shading or albedo_shading(b),
        FixedBackground((1.0, 1.0, 1.0)),
        torch.arange(b).repeat_interleave(size * size),
        occupancy=occupancy,
    )


def test_front_camera_sits_at_minus_y_and_views_are_named():
    cams = _cams([0.0, 90.0, 180.0, 270.0, 0.0], [0.0, 0.0, 0.0, 0.0, 80.0])
    assert torch.allclose(cams.position[0], torch.tensor([0.0, -2.0, 0.0]), atol=1e-6)
    assert torch.allclose(cams.position[1], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)  # azimuth turns to +X
    # VIEW_NAMES: front, side, back, side, overhead.
    assert cams.view.tolist() == [0, 1, 2, 1, 3]
    # Rotations are orthonormal with columns right, up, backward.
    eye = cams.rotation.transpose(1, 2) @ cams.rotation
    assert torch.allclose(eye, torch.eye(3).expand_as(eye), atol=1e-5)


def test_centre_ray_hits_the_origin_and_image_top_is_up():
    cams = _cams([30.0], [20.0])
    origins, dirs = camera_rays(cams, 3, 3)
    to_origin = -origins[0, 1, 1] / origins[0, 1, 1].norm()
    assert torch.allclose(dirs[0, 1, 1], to_origin, atol=1e-6)
    assert dirs[0, 0, 1, 2] > dirs[0, 2, 1, 2]  # row 0 looks higher (+Z) than row 2


def test_sample_cameras_stay_in_their_ranges():
    cfg = CameraConfig(elevation_deg=(0.0, 30.0), radius=(1.5, 1.7), fov_deg=(40.0, 45.0))
    cams = sample_cameras(cfg, 256, torch.Generator().manual_seed(1))
    r = cams.position.norm(dim=-1)
    assert r.min() >= 1.5 - 1e-5 and r.max() <= 1.7 + 1e-5
    el = torch.rad2deg(cams.elevation)
    assert el.min() >= 0.0 and el.max() <= 30.0
    assert set(cams.view.tolist()) == {0, 1, 2}  # all three side sectors drawn, never overhead


def test_constant_density_opacity_matches_beer_lambert():
    renderer = VolumeRenderer(RendererConfig(samples_per_ray=64, jitter=False, transmittance_threshold=0.0))
    sigma = 2.0
    out = _render(ConstantField(sigma), _cams([0.0], [0.0]), 1, renderer)
    # The centre ray crosses the 1 m box from t = 1.5 to 2.5. Steps of sqrt(3)/64 m start at
    # the entry and sample step centres: floor(1 / step - 0.5) + 1 = 37 samples lie inside.
    step = math.sqrt(3.0) / 64
    count = math.floor(1.0 / step - 0.5) + 1
    expected = 1.0 - math.exp(-sigma * step * count)
    assert out.samples == count
    assert out.opacity.item() == pytest.approx(expected, abs=1e-5)
    # Colour: grey where opaque, white background behind.
    assert out.rgb[0, 0].item() == pytest.approx(0.5 * expected + (1.0 - expected), abs=1e-5)


def test_rays_that_miss_the_box_show_the_background():
    renderer = VolumeRenderer(RendererConfig(jitter=False))
    cams = _cams([0.0], [0.0], radius=2.0, fov_deg=100.0)
    origins, dirs = camera_rays(cams, 9, 9)
    out = _render(ConstantField(50.0), cams, 9, renderer)
    corner = out.opacity.view(9, 9)[0, 0]
    assert corner.item() == 0.0
    assert torch.equal(out.rgb.view(9, 9, 3)[0, 0], torch.ones(3))


def test_occupancy_and_early_termination_skip_samples_but_not_pixels():
    shape = asymmetric_shape()
    cams = _cams([20.0, 200.0], [10.0, 30.0])
    dense = VolumeRenderer(RendererConfig(samples_per_ray=96, jitter=False, transmittance_threshold=0.0))
    fast = VolumeRenderer(RendererConfig(samples_per_ray=96, jitter=False, transmittance_threshold=1e-4))
    grid = OccupancyGrid(OccupancyConfig(resolution=32, warmup_steps=0), shape.bound)
    grid.update(
        shape.density, dense.step_size(shape.bound), step=100, generator=torch.Generator().manual_seed(0)
    )
    full = _render(shape, cams, 24, dense)
    skipped = _render(shape, cams, 24, fast, occupancy=grid)
    # The shape fills ~9 % of the box; with dilation the grid keeps well under half of it.
    assert grid.occupied_fraction < 0.4
    assert skipped.samples < 0.3 * full.samples
    # Skipped samples carried < 1e-4 transmittance or sat in cells whose density was ~0.
    assert torch.allclose(skipped.rgb, full.rgb, atol=2e-3)


def test_occupancy_grid_empties_decayed_cells():
    grid = OccupancyGrid(OccupancyConfig(resolution=8, warmup_steps=0, decay=0.5), bound=0.5)
    gen = torch.Generator().manual_seed(0)
    grid.update(lambda x: torch.full((x.shape[0],), 1e3), 0.01, step=1, generator=gen)
    assert grid.occupied_fraction == 1.0
    # Stored density is capped at 8x the threshold (~1.005): after 4 halvings (0.5) it is empty.
    for _ in range(4):
        grid.update(lambda x: torch.zeros(x.shape[0]), 0.01, step=1, generator=gen)
    assert grid.occupied_fraction == 0.0
    assert not grid.lookup(torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])).any()


def test_lambertian_and_textureless_shading():
    albedo = torch.tensor([[0.5, 0.2, 1.0], [0.5, 0.2, 1.0]])
    normals = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    light = torch.tensor([[0.0, 0.6, 0.8], [0.0, 0.6, 0.8]])
    ambient = torch.tensor([0.2, 0.2])
    lit = shade(albedo, normals, light, ambient, "lambertian")
    # n.l = 0.8 -> 0.2 + 0.8 * 0.8 = 0.84; back-facing -> ambient 0.2 only.
    assert torch.allclose(lit[0], albedo[0] * 0.84)
    assert torch.allclose(lit[1], albedo[1] * 0.2)
    assert torch.allclose(shade(albedo, normals, light, ambient, "textureless")[0], torch.full((3,), 0.84))
    with pytest.raises(ValueError, match="needs normals"):
        shade(albedo, None, light, ambient, "lambertian")


def test_finite_difference_normals_agree_with_autograd():
    torch.manual_seed(0)
    field = NeRFField(NeRFFieldConfig())
    # Points on shells 0.15 .. 0.3 m out: the blob's gradient is well above the grid's noise
    # there (the exponent has no hard clamp any more that would flatten the core).
    direction = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    x = direction * (0.15 + 0.15 * torch.rand(200, 1))
    fd = field.normals(x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(field.density(xg).sum(), xg)
    exact = -torch.nn.functional.normalize(grad, dim=-1)
    # At init the density is the Gaussian blob: smooth, so a 1 cm step is accurate,
    # and both point outward from the centre.
    cos = (fd * exact).sum(-1)
    assert cos.min() > 0.99
    assert ((fd * direction).sum(-1) > 0.95).all()
    # Passing the density at x (as the renderer does) skips one evaluation, same result.
    assert torch.allclose(field.normals(x, field.density(x)), fd, atol=1e-5)


def test_sphere_normals_render_as_outward_and_orientation_is_small():
    shape = sphere_shape()
    renderer = VolumeRenderer(RendererConfig(samples_per_ray=128, jitter=False))
    cams = _cams([0.0], [0.0])
    shading = Shading("lambertian", torch.tensor([[0.0, -1.0, 0.0]]), torch.tensor([0.0]))
    out = _render(shape, cams, 5, renderer, shading=shading)
    # Centre pixel: surface point (0, -0.3, 0), normal -Y, lit head-on: colour = albedo.
    centre = out.rgb.view(5, 5, 3)[2, 2]
    assert torch.allclose(centre, shape.colors[0], atol=2e-2)
    assert torch.allclose(out.normal.view(5, 5, 3)[2, 2], torch.tensor([0.0, -1.0, 0.0]), atol=2e-2)
    assert out.orientation.item() < 1e-3  # every visible normal faces the camera
