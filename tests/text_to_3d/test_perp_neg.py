"""Perp-Neg: threestudio's weights by azimuth, the perpendicular projection, and the guided
gradient on an exact denoiser whose answer is known in closed form."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from core.guidance.base import GuidanceInput, SDSConfig, sample_timesteps
from core.guidance.perp_neg import (
    BACK,
    FRONT,
    OVERHEAD,
    SIDE,
    PerpNegConfig,
    perp_neg_plan,
    perpendicular_component,
)
from core.guidance.stable_diffusion import StableDiffusionGuidance
from core.render.cameras import CameraConfig, orbit_cameras
from core.render.shading import albedo_shading


def _f(a: float, b: float, c: float, r: float) -> float:
    return a * math.exp(-b * r) + c


def _plan(az_deg: float, view: int = FRONT):
    return perp_neg_plan(torch.tensor([math.radians(az_deg)]), torch.tensor([view]), PerpNegConfig())


@pytest.mark.parametrize(
    ("az", "mix", "negs", "weights"),
    [
        # Straight at the front: no push away from "front" (f_fs(1) = 0), away from "side".
        (0.0, {FRONT: 1.0}, [FRONT, SIDE], [-_f(4, 0.5, -2.426, 1.0), -_f(4, 0.5, -2.426, 0.0)]),
        # Half way to the side, on either side of the front: the same blend and weights.
        (45.0, {FRONT: 0.5, SIDE: 0.5}, [FRONT, SIDE], [-_f(4, 0.5, -2.426, 0.5), -_f(4, 0.5, -2.426, 0.5)]),
        (315.0, {FRONT: 0.5, SIDE: 0.5}, [FRONT, SIDE], [-_f(4, 0.5, -2.426, 0.5), -_f(4, 0.5, -2.426, 0.5)]),
        # Side: the side-back branch starts (r = 1); pushed away from "front".
        (90.0, {SIDE: 1.0}, [SIDE, FRONT], [-_f(1, 0.5, -0.606, 1.0), -_f(1, 0.5, 0.967, 1.0)]),
        (135.0, {SIDE: 0.5, BACK: 0.5}, [SIDE, FRONT], [-_f(1, 0.5, -0.606, 0.5), -_f(1, 0.5, 0.967, 0.5)]),
        # Straight at the back: the strongest push away from "front".
        (180.0, {BACK: 1.0}, [SIDE, FRONT], [-_f(1, 0.5, -0.606, 0.0), -_f(1, 0.5, 0.967, 0.0)]),
    ],
)
def test_weights_by_azimuth_are_threestudios(az, mix, negs, weights):
    plan = _plan(az)
    expected_mix = torch.zeros(4)
    for view, w in mix.items():
        expected_mix[view] = w
    assert torch.allclose(plan.positive_mix[0], expected_mix, atol=1e-6)
    assert plan.negative_views[0].tolist() == negs
    assert torch.allclose(plan.negative_weights[0], torch.tensor(weights), atol=1e-5)
    assert plan.negative_active[0].all()


def test_threestudio_constants_vanish_where_the_view_is_the_prompt():
    # Front camera: the front prompt is not a negative; side camera: the side prompt is not.
    assert abs(_plan(0.0).negative_weights[0, 0].item()) < 1e-3
    assert abs(_plan(90.0).negative_weights[0, 0].item()) < 1e-3
    # Back camera: pushed away from the front harder than a side camera is.
    assert _plan(180.0).negative_weights[0, 1] < _plan(90.0).negative_weights[0, 1] < 0


def test_overhead_cameras_use_the_overhead_prompt_and_no_negatives():
    plan = _plan(120.0, view=OVERHEAD)
    assert plan.positive_mix[0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert plan.negative_weights[0].tolist() == [0.0, 0.0]
    assert not plan.negative_active[0].any()


def test_perpendicular_component():
    y = torch.randn(3, 4, 5, 5)
    x = torch.randn(3, 4, 5, 5)
    p = perpendicular_component(x, y)
    # Orthogonal to y per sample, and x minus it is parallel to y.
    assert torch.allclose((p * y).sum((1, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(perpendicular_component(2.5 * y, y), torch.zeros_like(y), atol=1e-5)
    ortho = perpendicular_component(x, y)
    assert torch.allclose(perpendicular_component(ortho, y), ortho, atol=1e-5)


# -- the whole guidance on an exact denoiser ---------------------------------------------------------

NAMES = ("front", "side", "back", "overhead", "uncond")


def _exact_guidance(tiny_sd, targets: torch.Tensor, perp_neg: bool, scale: float = 7.5):
    """The tiny pipeline's guidance with its text embeddings replaced by basis vectors (front,
    side, back, overhead, uncond) and its UNet by the exact denoiser of a point mass per prompt:
    an embedding ``sum_k c_k e_k`` has the data distribution ``x* = sum_k c_k targets[k]``, so
    ``eps = (x_t - sqrt(a) x*) / sqrt(1 - a)`` exactly (blended prompts blend their targets)."""
    config = SDSConfig(guidance_scale=scale, perp_neg=perp_neg)
    g = StableDiffusionGuidance(str(tiny_sd), "a red chair", config=config)
    tokens, dim = g.view_embeddings.shape[1:]
    basis = torch.zeros(5, tokens, dim)
    for k in range(5):
        basis[k, :, k] = 1.0
    g.view_embeddings, g.uncond_embedding = basis[:4], basis[4:]

    def unet(noisy, t, encoder_hidden_states):
        a = g.alphas_cumprod[t].view(-1, 1, 1, 1)
        coeff = encoder_hidden_states[:, 0, :5]  # (N, 5)
        target = torch.einsum("nk,kchw->nchw", coeff, targets)
        return SimpleNamespace(sample=(noisy - a.sqrt() * target) / (1 - a).sqrt())

    g.unet = unet
    return g


def _cameras(az_deg: list[float], elev_deg: list[float]):
    n = len(az_deg)
    return orbit_cameras(
        torch.deg2rad(torch.tensor(az_deg)),
        torch.deg2rad(torch.tensor(elev_deg)),
        torch.full((n,), 1.8),
        torch.full((n,), math.radians(45.0)),
        CameraConfig(),
    )


def _latent_grad(guidance, latents, cameras, seed=0):
    x = latents.clone().requires_grad_(True)
    inp = GuidanceInput(x, cameras, albedo_shading(len(cameras)), 0, 10, space="latent")
    out = guidance(inp, torch.Generator().manual_seed(seed))
    out.loss.backward()
    return x.grad, out.timesteps


def test_perp_neg_gradient_on_the_exact_denoiser_is_the_closed_form(tiny_sd):
    torch.manual_seed(0)
    targets = torch.randn(5, 4, 8, 8)
    scale = 7.5
    guidance = _exact_guidance(tiny_sd, targets, perp_neg=True, scale=scale)
    cameras = _cameras([20.0, 250.0, 170.0, 40.0], [10.0, 20.0, 5.0, 70.0])  # the last is overhead
    latents = torch.randn(4, 4, 8, 8)
    grad, t = _latent_grad(guidance, latents, cameras)

    # Closed form, written from threestudio's definitions with this test's own weights.
    # eps_p - eps_u = sqrt(a / (1 - a)) (x*_u - x*_p) for every prompt p; the noise cancels in
    # w(t) (eps_hat - noise); the projection ratio is scale-free.
    a = guidance.alphas_cumprod[t]
    k = torch.sqrt(a / (1 - a)).view(-1, 1, 1, 1)
    front, side, back, overhead, uncond = targets
    expected = []
    for i, (az, el) in enumerate(zip([20.0, 250.0, 170.0, 40.0], [10.0, 20.0, 5.0, 70.0], strict=True)):
        saz = abs((az + 180.0) % 360.0 - 180.0)
        if el > 60.0:
            pos, negs = overhead, []
        elif saz < 90.0:
            r = 1.0 - saz / 90.0
            pos = r * front + (1 - r) * side
            negs = [(front, -_f(4, 0.5, -2.426, r)), (side, -_f(4, 0.5, -2.426, 1 - r))]
        else:
            r = 2.0 - saz / 90.0
            pos = r * side + (1 - r) * back
            negs = [(side, -_f(1, 0.5, -0.606, r)), (front, -_f(1, 0.5, 0.967, r))]
        e_pos = uncond - pos
        guided = e_pos.clone()
        for neg, w in negs:
            e = uncond - neg
            guided += w * (e - (e * e_pos).sum() / (e_pos * e_pos).sum() * e_pos)
        eps_minus_noise = k[i] * ((latents[i] - uncond) + scale * guided)
        expected.append((1 - a[i]) * eps_minus_noise / 4)  # SDS weight, batch mean
    expected = torch.stack(expected)
    assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-4 * expected.abs().max().item())
    # And the negatives matter: plain CFG on the same draws differs.
    plain, t_plain = _latent_grad(
        _exact_guidance(tiny_sd, targets, perp_neg=False, scale=scale), latents, cameras
    )
    assert torch.equal(t, t_plain)
    assert (plain - grad).abs().max() > 0.1 * grad.abs().max()


def test_a_negative_parallel_to_the_positive_changes_nothing(tiny_sd):
    # A front camera's one active negative is the side prompt. If "side" only says "front" more
    # strongly (its direction from uncond is parallel to front's), Perp-Neg removes none of the
    # object: the gradient is plain CFG's.
    torch.manual_seed(1)
    targets = torch.randn(5, 4, 8, 8)
    targets[SIDE] = targets[4] + 3.0 * (targets[FRONT] - targets[4])
    cameras = _cameras([0.0, 0.0], [15.0, 30.0])
    latents = torch.randn(2, 4, 8, 8)
    perp, _ = _latent_grad(_exact_guidance(tiny_sd, targets, perp_neg=True), latents, cameras)
    plain, _ = _latent_grad(_exact_guidance(tiny_sd, targets, perp_neg=False), latents, cameras)
    assert torch.allclose(perp, plain, rtol=1e-4, atol=1e-5 * plain.abs().max().item())
    # An orthogonal "side" is pushed away from, with the side weight (f_sf(0) = 1.574).
    targets[SIDE] = targets[4] + perpendicular_component(
        torch.randn(1, 4, 8, 8), (targets[4] - targets[FRONT]).unsqueeze(0)
    ).squeeze(0)
    perp, t = _latent_grad(_exact_guidance(tiny_sd, targets, perp_neg=True), latents, cameras)
    plain, _ = _latent_grad(_exact_guidance(tiny_sd, targets, perp_neg=False), latents, cameras)
    g = _exact_guidance(tiny_sd, targets, perp_neg=False)
    a = g.alphas_cumprod[t].view(-1, 1, 1, 1)
    push = (
        (1 - a) * torch.sqrt(a / (1 - a)) * 7.5 * -_f(4, 0.5, -2.426, 0.0) * (targets[4] - targets[SIDE]) / 2
    )
    assert torch.allclose(perp - plain, push, rtol=1e-3, atol=1e-4 * push.abs().max().item())


def test_perp_neg_scores_four_rows_per_sample_on_the_real_unet(tiny_sd):
    guidance = StableDiffusionGuidance(str(tiny_sd), "a red chair", config=SDSConfig(perp_neg=True))
    rows = []
    inner = guidance.unet
    guidance.unet = lambda x, t, encoder_hidden_states: (
        rows.append(x.shape[0]) or inner(x, t, encoder_hidden_states=encoder_hidden_states)
    )
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    out = guidance(
        GuidanceInput(images, _cameras([10.0, 100.0, 200.0], [0.0, 0.0, 0.0]), albedo_shading(3), 0, 10),
        torch.Generator().manual_seed(0),
    )
    out.loss.backward()
    assert rows == [12]
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_timesteps_and_noise_are_drawn_alike_with_and_without_perp_neg(tiny_sd):
    # Same generator, same draws: Perp-Neg changes the prediction only.
    gen = torch.Generator().manual_seed(0)
    t = sample_timesteps(SDSConfig(), 0, 10, 1000, 2, gen)
    targets = torch.randn(5, 4, 8, 8)
    _, t_perp = _latent_grad(
        _exact_guidance(tiny_sd, targets, perp_neg=True),
        torch.randn(2, 4, 8, 8),
        _cameras([30.0, 200.0], [0.0, 0.0]),
    )
    assert torch.equal(t_perp, t)


def test_request_and_cli_turn_perp_neg_on(tiny_sd, tmp_path, monkeypatch):
    from core.pipelines import text_to_3d as engine

    seen = []
    real = engine.load_guidance

    def load(request, config, device):
        seen.append(config.sds.perp_neg)
        return real(request, config, device)

    monkeypatch.setattr(engine, "load_guidance", load)
    small = engine.preset_config("cpu")
    small = dataclasses.replace(small, train=dataclasses.replace(small.train, steps=1, height=8, width=8))
    for flag in (None, True):
        engine.text_to_3d(
            engine.TextTo3DRequest(prompt="a cup", model=str(tiny_sd), perp_neg=flag), config=small
        )
    assert seen == [False, True]
    args = []
    monkeypatch.setattr(engine, "make_asset", lambda request, *a: args.append(request.perp_neg) or {})
    engine.main(["--prompt", "a cup", "--out", str(tmp_path / "o")])
    engine.main(["--prompt", "a cup", "--perp-neg", "--out", str(tmp_path / "o")])
    assert args == [None, True]
