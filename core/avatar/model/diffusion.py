"""Diffusion over rolled-out tri-planes: a small 3D-aware UNet, v-prediction, DDIM and guidance."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DiffusionConfig:
    """Shape of the denoiser and its noise schedule."""

    base_channels: int = 64
    """Channels at the UNet's first level."""
    channel_mults: tuple[int, ...] = (1, 2, 2)
    """Channel multiplier per level; each level after the first halves the resolution."""
    patch: int = 2
    """Pixel-unshuffle factor applied to the rolled-out planes before the first level."""
    cond_dim: int = 128
    """Width of the attribute and time embeddings."""
    time_steps: int = 1000
    """Training noise levels (cosine schedule)."""
    attention: bool = True
    """Self-attention at the lowest level (global context across the three planes)."""
    downsample: int = 1
    """The denoiser works on the residual planes average-pooled by this factor (a base level);
    samples are upsampled bilinearly and the attribute-conditioned centre, at full resolution,
    supplies the detail. 1 = the denoiser sees full-resolution planes."""


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Optimisation settings of the denoiser."""

    steps: int = 6000
    """Optimiser steps in total (a run stops early at its time budget and resumes)."""
    batch_size: int = 32
    """Tri-planes per step."""
    lr: float = 5e-4
    """AdamW peak learning rate (linear warm-up, cosine decay)."""
    warmup: int = 200
    """Warm-up steps."""
    ema: float = 0.998
    """Decay of the exponential moving average of the weights that ships."""
    attr_drop: float = 0.3
    """Each attribute is replaced by its null token with this probability (partial prompts)."""
    all_drop: float = 0.1
    """All attributes are dropped together with this probability (classifier-free guidance)."""
    seed: int = 0
    """Seeds the batch order and noise."""
    conditional_mean: bool = True
    """Centre the planes on an additive per-attribute mean (``PlaneNormalizer.fit`` with attributes)."""


# ---------------------------------------------------------------------------------------
# Layout and normalisation.


def pool_planes(planes: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool each plane of (B, 3, C, R, R) by ``factor`` -> (B, 3, C, R/f, R/f)."""
    if factor == 1:
        return planes
    B, P, C, R, _ = planes.shape
    return F.avg_pool2d(planes.reshape(B * P, C, R, R), factor).reshape(B, P, C, R // factor, R // factor)


def upsample_planes(planes: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling of each plane of (B, 3, C, r, r) by ``factor`` (the inverse of pooling)."""
    if factor == 1:
        return planes
    B, P, C, r, _ = planes.shape
    up = F.interpolate(
        planes.reshape(B * P, C, r, r), scale_factor=factor, mode="bilinear", align_corners=False
    )
    return up.reshape(B, P, C, r * factor, r * factor)


def roll_out(planes: torch.Tensor) -> torch.Tensor:
    """(B, 3, C, R, R) -> (B, C, R, 3R): planes XY, XZ, YZ side by side."""
    return torch.cat(planes.unbind(1), dim=-1)


def roll_in(x: torch.Tensor) -> torch.Tensor:
    """(B, C, R, 3R) -> (B, 3, C, R, R), the inverse of ``roll_out``."""
    return torch.stack(x.chunk(3, dim=-1), dim=1)


@dataclass
class PlaneNormalizer:
    """Centre and scale tri-planes so the denoiser sees unit-scale residuals.

    The centre is the training mean plus, when ``effects`` is set, one additive offset per
    specified attribute value (a ridge regression of the planes on the one-hot attributes, a
    "conditional prior mean" as in PriorGrad). The denoiser then only has to model what the
    attributes do not explain (the seed's variation and the attributes' interactions), so a
    short CPU training still follows the prompt; an unspecified attribute adds no offset (its
    offsets are centred on the training frequencies) and is left to the denoiser.

    Attributes:
        mean: (3, C, R, R) mean of the training planes.
        std: (3, C) standard deviation of (planes - centre) per plane and channel.
        effects: (sum of vocabulary sizes, 3, C, R, R) offsets, rows in ``ATTRIBUTE_NAMES`` order,
            or None for an unconditional centre (the first shipped model).
    """

    mean: torch.Tensor
    std: torch.Tensor
    effects: torch.Tensor | None = None

    @classmethod
    def fit(
        cls, planes: torch.Tensor, attrs: torch.Tensor | None = None, ridge: float = 1.0, pool: int = 1
    ) -> PlaneNormalizer:
        """Fit to planes (N, 3, C, R, R); with full conditions ``attrs`` (N, A), fit the offsets too.

        ``pool`` > 1: the scale ``std`` is that of the residuals average-pooled by ``pool`` (what a
        denoiser with ``DiffusionConfig.downsample`` sees), so its data has unit variance."""
        mean = planes.mean(0)
        if attrs is None:
            return cls(mean, (planes - mean).std(dim=(0, 3, 4)).clamp_min(1e-4))
        from core.avatar.model.conditioning import VOCAB_SIZES

        N = len(planes)
        sizes = VOCAB_SIZES[: attrs.shape[1]]
        onehot = torch.cat([F.one_hot(attrs[:, a], k).float() for a, k in enumerate(sizes)], 1)
        X = torch.cat([onehot, torch.ones(N, 1)], 1).double()
        Y = planes.reshape(N, -1).double()
        W = torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)
        # Centre each attribute's offsets on its training frequencies, so "unspecified" is 0.
        rows, start = [], 0
        for k in sizes:
            block = W[start : start + k]
            freq = onehot[:, start : start + k].double().mean(0)
            rows.append(block - (freq[:, None] * block).sum(0))
            start += k
        effects = torch.cat(rows).float().reshape(-1, *planes.shape[1:])
        norm = cls(mean, torch.ones(planes.shape[1:3]), effects)
        norm.std = pool_planes(planes - norm.centre(attrs), pool).std(dim=(0, 3, 4)).clamp_min(1e-4)
        return norm

    def centre(self, cond: torch.Tensor | None) -> torch.Tensor:
        """The centre for conditions ``cond`` (B, A) (null tokens add nothing) -> (B, 3, C, R, R)."""
        if self.effects is None or cond is None:
            return self.mean[None]
        from core.avatar.model.conditioning import VOCAB_SIZES

        # The offsets cover a prefix of ATTRIBUTE_NAMES (a model trained before later attributes
        # were appended); conditions may be wider, and the extra attributes add nothing.
        n = int(np.searchsorted(np.cumsum(VOCAB_SIZES), len(self.effects))) + 1
        cond = cond[:, :n]
        sizes = torch.tensor(VOCAB_SIZES[:n])
        starts = torch.cumsum(sizes, 0) - sizes
        specified = cond < sizes  # (B, A)
        rows = (starts + cond.clamp(max=sizes - 1)).reshape(-1)
        offs = self.effects[rows].reshape(*cond.shape, *self.effects.shape[1:])
        w = specified.to(offs.dtype).reshape(*cond.shape, 1, 1, 1, 1)
        return self.mean + (offs * w).sum(1)

    def normalize(self, planes: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return (planes - self.centre(cond)) / self.std[..., None, None]

    def denormalize(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return x * self.std[..., None, None] + self.centre(cond)


# ---------------------------------------------------------------------------------------
# Noise schedule (cosine, continuous in t / T).


def alpha_sigma(t: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales at integer steps ``t`` in [0, T): x_t = alpha x_0 + sigma eps."""
    s = 0.008
    f = torch.cos(((t.float() + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    ab = (f / f0).clamp(1e-5, 0.9999)
    return ab.sqrt(), (1 - ab).sqrt()


# ---------------------------------------------------------------------------------------
# The denoiser.


def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


class AxisMix(nn.Module):
    """3D-aware mixing: each plane receives the other two planes' features pooled along their shared axis.

    On the rolled-out map (B, F, H, 3W) the planes are XY (rows y, cols x), XZ (rows z, cols x)
    and YZ (rows z, cols y). For XY, XZ averaged over z gives a vector over x (broadcast along
    rows) and YZ averaged over z a vector over y (broadcast along columns); likewise for the
    others. A zero-initialised 1x1 convolution adds the result, so the block starts as identity.
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.proj = nn.Conv2d(3 * ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xy, xz, yz = self.norm(x).chunk(3, dim=-1)  # each (B, F, H, W)
        H, W = xy.shape[-2:]
        xz_x = xz.mean(2, keepdim=True)  # (B, F, 1, W): over x
        yz_y = yz.mean(2, keepdim=True)  # (B, F, 1, W): over y
        xy_x = xy.mean(2, keepdim=True)  # over x
        xy_y = xy.mean(3, keepdim=True)  # (B, F, H, 1): over y
        xz_z = xz.mean(3, keepdim=True)  # over z
        yz_z = yz.mean(3, keepdim=True)  # over z
        a = torch.cat(
            [
                xz_x.expand(-1, -1, H, W),  # XY <- x profile of XZ along columns
                xy_x.expand(-1, -1, H, W),  # XZ <- x profile of XY along columns
                xy_y.transpose(2, 3).expand(-1, -1, H, W),  # YZ <- y profile of XY along columns
            ],
            dim=-1,
        )
        b = torch.cat(
            [
                yz_y.transpose(2, 3).expand(-1, -1, H, W),  # XY <- y profile of YZ along rows
                yz_z.expand(-1, -1, H, W),  # XZ <- z profile of YZ along rows
                xz_z.expand(-1, -1, H, W),  # YZ <- z profile of XZ along rows
            ],
            dim=-1,
        )
        return x + self.proj(torch.cat([x, a, b], dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding as scale and shift in between, then AxisMix."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(_groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2 = nn.GroupNorm(_groups(cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.mix = AxisMix(cout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(emb)[..., None, None].chunk(2, dim=1)
        h = self.c2(F.silu(self.n2(h) * (1 + scale) + shift))
        return self.mix(self.skip(x) + h)


class Attention(nn.Module):
    """Multi-head self-attention over all positions of the three planes."""

    def __init__(self, ch: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.attn = nn.MultiheadAttention(ch, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, F_, H, W = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)
        out = self.attn(t, t, t, need_weights=False)[0]
        return x + out.transpose(1, 2).reshape(B, F_, H, W)


def timestep_embedding(t: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    """Sinusoidal embedding of steps ``t`` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = (t.float() * (1000.0 / T))[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class TriplaneUNet(nn.Module):
    """Denoiser over rolled-out tri-planes, conditioned on attributes and the noise level.

    Input and output: (B, C, R, 3R). ``R / patch`` must be divisible by 2^(levels-1) so that
    downsampling never mixes two planes.
    """

    def __init__(
        self, plane_channels: int, resolution: int, cfg: DiffusionConfig, n_attributes: int | None = None
    ) -> None:
        super().__init__()
        from core.avatar.model.conditioning import AttributeEncoder

        self.cfg = cfg
        p, L = cfg.patch, len(cfg.channel_mults)
        if resolution % (p * 2 ** (L - 1)):
            raise ValueError(
                f"plane resolution {resolution} must be divisible by patch * 2^(levels-1) = {p * 2 ** (L - 1)}"
            )
        chs = [cfg.base_channels * m for m in cfg.channel_mults]
        E = cfg.cond_dim
        self.cond = AttributeEncoder(E, n_attributes)
        self.time = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.conv_in = nn.Conv2d(plane_channels * p * p, chs[0], 3, padding=1)
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        prev = chs[0]
        for i, c in enumerate(chs):
            self.enc.append(ResBlock(prev, c, E))
            if i < L - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            prev = c
        self.mid1 = ResBlock(chs[-1], chs[-1], E)
        self.attn = Attention(chs[-1]) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(chs[-1], chs[-1], E)
        self.dec = nn.ModuleList([ResBlock(2 * c, c, E) for c in chs])
        self.up = nn.ModuleList([nn.Conv2d(chs[i], chs[i - 1], 3, padding=1) for i in range(1, L)])
        self.norm_out = nn.GroupNorm(_groups(chs[0]), chs[0])
        self.conv_out = nn.Conv2d(chs[0], plane_channels * p * p, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict v for noisy planes ``x`` (B, C, R, 3R) at steps ``t`` (B,) under ``cond`` (B, A)."""
        emb = F.silu(
            self.time(timestep_embedding(t, self.cfg.cond_dim, self.cfg.time_steps)) + self.cond(cond)
        )
        # Pixel-unshuffle each plane separately (the width is 3 planes side by side).
        h = self.conv_in(torch.cat([F.pixel_unshuffle(q, self.cfg.patch) for q in x.chunk(3, -1)], dim=-1))
        skips = []
        for i, block in enumerate(self.enc):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.down):
                h = self.down[i](h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for i in reversed(range(len(self.dec))):
            h = self.dec[i](torch.cat([h, skips[i]], dim=1), emb)
            if i > 0:
                h = self.up[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.cat([F.pixel_shuffle(q, self.cfg.patch) for q in h.chunk(3, -1)], dim=-1)


# ---------------------------------------------------------------------------------------
# Training and sampling.


def v_loss(model: TriplaneUNet, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """v-prediction MSE for clean normalised rolled-out planes ``x0`` (B, C, R, 3R)."""
    T = model.cfg.time_steps
    t = torch.randint(0, T, (len(x0),), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a, s = (v[:, None, None, None] for v in alpha_sigma(t, T))
    xt = a * x0 + s * eps
    v = a * eps - s * x0
    return F.mse_loss(model(xt, t, cond), v)


@torch.no_grad()
def ddim_sample(
    model: TriplaneUNet,
    cond: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 25,
    guidance_scale: float = 2.0,
    callback: Callable[[int, int], None] | None = None,
    uncond_shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) with classifier-free guidance.

    Args:
        model: the denoiser (v-prediction).
        cond: (B, A) conditions.
        noise: (B, C, R, 3R) starting noise; the same noise gives the same sample.
        steps: DDIM steps.
        guidance_scale: 1 = conditional only; > 1 pushes towards the condition.
        callback: called with (step index, steps) after each step.
        uncond_shift: with a conditional centre (``PlaneNormalizer.effects``), the samples live
            in the condition's frame z_c = (planes - centre(c)) / std, and the unconditional
            branch was trained in the null frame z_0 = z_c + shift, shift = (centre(c) -
            centre(null)) / std, rolled out. Its input is moved into that frame
            (x + alpha shift) and its prediction back (v + sigma shift), so both branches
            describe the same planes before they are mixed.

    Returns:
        (B, C, R, 3R) normalised rolled-out planes.
    """
    from core.avatar.model.conditioning import null_indices

    T = model.cfg.time_steps
    ts = torch.linspace(T - 1, 0, steps).round().long()
    null = torch.from_numpy(null_indices()[: cond.shape[1]]).expand_as(cond)
    x = noise
    for i, t in enumerate(ts):
        tb = t.expand(len(x))
        a, s = (u[:, None, None, None] for u in alpha_sigma(tb, T))
        if guidance_scale == 1.0:
            v = model(x, tb, cond)
        else:
            xu = x if uncond_shift is None else x + a * uncond_shift
            vc, vu = model(torch.cat([x, xu]), torch.cat([tb, tb]), torch.cat([cond, null])).chunk(2)
            if uncond_shift is not None:
                vu = vu + s * uncond_shift
            v = vu + guidance_scale * (vc - vu)
        x0 = a * x - s * v
        eps = s * x + a * v
        if i + 1 < len(ts):
            a2, s2 = (u[:, None, None, None] for u in alpha_sigma(ts[i + 1].expand(len(x)), T))
            x = a2 * x0 + s2 * eps
        else:
            x = x0
        if callback is not None:
            callback(i, steps)
    return x


def train_diffusion(
    planes: torch.Tensor,
    attrs: torch.Tensor,
    cfg: DiffusionConfig,
    tcfg: DiffusionTrainConfig,
    ckpt: Path,
    checkpoint_seconds: float = 90.0,
    check: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume training) the denoiser on ``planes`` (N, 3, C, R, R) with conditions ``attrs`` (N, A).

    Writes ``ckpt`` (model, EMA, optimiser, normaliser, step) at least every ``checkpoint_seconds``
    and when ``check`` raises (out of time). Returns the final checkpoint dict.
    """
    from core.avatar.model.conditioning import drop_conditions

    N, _, C, R, _ = planes.shape
    ds = cfg.downsample
    if R % ds:
        raise ValueError(f"plane resolution {R} is not divisible by the denoiser's downsample {ds}")
    model = TriplaneUNet(C, R // ds, cfg, n_attributes=attrs.shape[1])
    ema = TriplaneUNet(C, R // ds, cfg, n_attributes=attrs.shape[1])
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(tcfg.seed)
    step = 0
    norm = PlaneNormalizer.fit(planes, attrs if tcfg.conditional_mean else None, pool=ds)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step = state["step"]
        norm = PlaneNormalizer(state["norm_mean"], state["norm_std"], state.get("norm_effects"))
        log(f"diffusion: resuming at step {step}")
    n_params = sum(p.numel() for p in model.parameters())

    def save() -> dict:
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                 "step": step, "norm_mean": norm.mean, "norm_std": norm.std, "norm_effects": norm.effects,
                 "n_params": n_params}  # fmt: skip
        tmp = ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt)
        return state

    log(f"diffusion: {N} tri-planes, {n_params / 1e6:.2f} M parameters, from step {step} to {tcfg.steps}")
    t0, last_save, start, avg = time.monotonic(), time.monotonic(), step, None
    try:
        while step < tcfg.steps:
            check()
            lr = tcfg.lr * min(1.0, (step + 1) / tcfg.warmup)
            lr *= 0.5 * (1 + math.cos(math.pi * step / tcfg.steps)) * 0.9 + 0.1
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(0, N, (tcfg.batch_size,), generator=gen)
            cond = drop_conditions(attrs[idx], tcfg.attr_drop, tcfg.all_drop, gen)
            loss = v_loss(model, roll_out(pool_planes(norm.normalize(planes[idx], cond), ds)), cond, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            # Short runs need a shorter EMA horizon early on, or the EMA lags far behind.
            decay = min(tcfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
            val = float(loss.detach())
            avg = val if avg is None else 0.98 * avg + 0.02 * val
            if step % 25 == 0 or step == tcfg.steps:
                rate = (time.monotonic() - t0) / (step - start)
                log(f"diffusion: step {step}/{tcfg.steps} loss {avg:.4f} lr {lr:.2e} ({rate:.2f} s/step)")
            if time.monotonic() - last_save > checkpoint_seconds:
                save()
                last_save = time.monotonic()
    except BaseException:
        save()
        raise
    return save()
