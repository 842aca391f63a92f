"""Exact-denoiser guidance: SDS toward known target images, which makes it multi-view reconstruction."""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.guidance.base import (
    Guidance,
    GuidanceInput,
    GuidanceOutput,
    SDSConfig,
    ddpm_alphas_cumprod,
    sample_timesteps,
    sds_gradient,
    sds_loss,
)
from core.render.cameras import CameraBatch
from core.render.shading import Shading

TargetFn = Callable[[CameraBatch, Shading, int, int], torch.Tensor]
"""(cameras, shading, height, width) -> (B, 3, H, W) target images in [0, 1]."""


class ExactDenoiserGuidance(Guidance):
    """SDS in pixel space with the optimal denoiser of a point-mass data distribution.

    When the data distribution for a camera is a single image ``x*``, the best noise
    prediction for ``x_t = sqrt(a) x + sqrt(1 - a) eps`` is analytic:
    ``eps_hat = (x_t - sqrt(a) x*) / sqrt(1 - a)``. Then
    ``eps_hat - eps = sqrt(a / (1 - a)) (x - x*)``: the SDS gradient is a timestep-weighted
    L2 pull toward ``x*``, so SDS with it reconstructs the shape behind the targets.
    """

    def __init__(
        self, target_fn: TargetFn, config: SDSConfig | None = None, num_train_timesteps: int = 1000
    ) -> None:
        self.target_fn = target_fn
        self.config = config or SDSConfig()
        self.alphas_cumprod = ddpm_alphas_cumprod(num_train_timesteps)

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> GuidanceOutput:
        # Pixels map to the [-1, 1] range diffusion models work in; latents are used as they are.
        latent = inp.space == "latent"
        x = inp.images if latent else inp.images * 2.0 - 1.0
        b, _, h, w = x.shape
        with torch.no_grad():
            target = self.target_fn(inp.cameras, inp.shading, h, w).to(x)
            target = target if latent else target * 2.0 - 1.0
        t = sample_timesteps(self.config, inp.step, inp.total_steps, len(self.alphas_cumprod), b, generator)
        a = self.alphas_cumprod[t].to(x)
        noise = torch.randn(x.shape, generator=generator).to(x)
        sa, s1a = a.sqrt().view(-1, 1, 1, 1), (1.0 - a).sqrt().view(-1, 1, 1, 1)
        x_t = sa * x.detach() + s1a * noise
        eps_hat = (x_t - sa * target) / s1a
        grad = sds_gradient(eps_hat, noise, a, self.config)
        return GuidanceOutput(sds_loss(x, grad), t, float(grad.norm()))
