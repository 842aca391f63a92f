"""The guidance interface and the Score Distillation Sampling maths its implementations share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

from core.render.cameras import CameraBatch
from core.render.shading import Shading


class GuidanceError(ValueError):
    """Guidance could not be set up; the message says what to do."""


@dataclass
class SDSConfig:
    """Score Distillation Sampling settings (DreamFusion section 3)."""

    guidance_scale: float = 100.0
    """Classifier-free guidance scale; DreamFusion uses about 100."""
    t_range: tuple[float, float] = (0.02, 0.98)
    """Timesteps are drawn from this fraction of the noise schedule at the start."""
    t_max_end: float = 0.5
    """The upper end of the range anneals linearly to this fraction by the last step."""
    weighting: Literal["sds", "uniform"] = "sds"
    """w(t): ``1 - alpha_bar_t`` as DreamFusion ("sds"), or 1."""
    grad_clip: float | None = 1.0
    """Clamp each element of the SDS gradient to [-grad_clip, grad_clip] (None: no clipping)."""


@dataclass
class GuidanceInput:
    """A rendered batch and how it was made."""

    images: torch.Tensor
    """(B, 3, H, W) renders in [0, 1], differentiable."""
    cameras: CameraBatch
    """The B cameras (their ``view`` picks the view-dependent prompt)."""
    shading: Shading
    """The shading used for the render."""
    step: int
    """Training step, from 0."""
    total_steps: int
    """Steps of the whole run (for annealing)."""


@dataclass
class GuidanceOutput:
    """A guidance's verdict on a batch."""

    loss: torch.Tensor
    """Scalar whose gradient with respect to the input images (or latents) is the SDS gradient."""
    timesteps: torch.Tensor
    """(B,) the diffusion timesteps used."""
    grad_norm: float
    """Norm of the (clipped) SDS gradient, for logging."""


class Guidance(ABC):
    """Scores renders; ``text_to_3d`` minimises its loss."""

    @abstractmethod
    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> GuidanceOutput:
        """Loss for a rendered batch; random draws come from ``generator`` only."""


def ddpm_alphas_cumprod(
    steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Stable Diffusion's "scaled_linear" schedule: (steps,) cumulative products of 1 - beta."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def sample_timesteps(
    config: SDSConfig,
    step: int,
    total_steps: int,
    num_train_timesteps: int,
    batch: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B,) long timesteps uniform in the annealed range ``[t_min, t_max(step)]``."""
    lo, hi = config.t_range
    progress = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    hi = hi + (min(config.t_max_end, hi) - hi) * progress
    hi = max(hi, lo)
    u = torch.rand(batch, generator=generator)
    t = (lo + (hi - lo) * u) * (num_train_timesteps - 1)
    return t.round().long()


def sds_gradient(
    eps_pred: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, config: SDSConfig
) -> torch.Tensor:
    """``w(t) (eps_pred - noise)``, NaN-free and clipped: all (B, C, H, W); alpha_bar is (B,)."""
    w = (1.0 - alpha_bar) if config.weighting == "sds" else torch.ones_like(alpha_bar)
    grad = w.view(-1, 1, 1, 1).to(eps_pred.dtype) * (eps_pred - noise)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if config.grad_clip is not None:
        grad = grad.clamp(-config.grad_clip, config.grad_clip)
    return grad


def sds_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient with respect to ``x`` is ``grad / B`` (the SDS trick).

    ``0.5 * |x - stopgrad(x - grad)|^2`` differentiates to ``grad``; summing over pixels and
    averaging over the batch keeps its scale independent of the batch size.
    """
    target = (x - grad).detach()
    return 0.5 * ((x.float() - target.float()) ** 2).sum() / x.shape[0]
