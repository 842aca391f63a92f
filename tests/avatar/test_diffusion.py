"""Tri-plane diffusion: layout, 3D-aware mixing, schedule maths, DDIM, conditioning, smoke training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from core.avatar.model.conditioning import (
    VOCAB_SIZES,
    AttributeEncoder,
    condition_from_partial,
    drop_conditions,
    null_indices,
    partial_from_condition,
)
from core.avatar.model.diffusion import (
    AxisMix,
    DiffusionConfig,
    DiffusionTrainConfig,
    PlaneNormalizer,
    TriplaneUNet,
    alpha_sigma,
    ddim_sample,
    roll_in,
    roll_out,
    train_diffusion,
)
from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, VOCAB, AttributeValueError

torch.set_num_threads(1)


def test_roll_out_places_planes_side_by_side_and_inverts():
    planes = torch.randn(2, 3, 4, 5, 5)
    x = roll_out(planes)
    assert x.shape == (2, 4, 5, 15)
    assert torch.equal(x[..., 5:10], planes[:, 1])  # XZ in the middle
    assert torch.equal(roll_in(x), planes)


def test_normalizer_gives_zero_mean_unit_std_and_inverts():
    planes = 3 + 2 * torch.randn(50, 3, 2, 4, 4)
    norm = PlaneNormalizer.fit(planes)
    z = norm.normalize(planes)
    assert torch.allclose(z.mean(0), torch.zeros(3, 2, 4, 4), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 3, 4)), torch.ones(3, 2), atol=1e-4)
    assert torch.allclose(norm.denormalize(z), planes, atol=1e-5)


def _additive_planes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Planes = base + one offset per attribute value + small noise; returns planes, attrs, offsets."""
    g = torch.Generator().manual_seed(seed)
    shape = (3, 2, 4, 4)
    offsets = [torch.randn(k, *shape, generator=g) for k in VOCAB_SIZES]
    attrs = torch.stack([torch.randint(0, k, (n,), generator=g) for k in VOCAB_SIZES], 1)
    planes = (
        5 + sum(o[attrs[:, a]] for a, o in enumerate(offsets)) + 0.05 * torch.randn(n, *shape, generator=g)
    )
    return planes, attrs, offsets


def test_conditional_normalizer_learns_the_attribute_means():
    planes, attrs, offsets = _additive_planes(3000)
    norm = PlaneNormalizer.fit(planes, attrs)
    # The fitted centre of fresh conditions matches the truth without noise.
    _, test_attrs, _ = _additive_planes(20, seed=1)
    truth = 5 + sum(o[test_attrs[:, a]] for a, o in enumerate(offsets))
    assert (norm.centre(test_attrs) - truth).abs().max() < 0.1
    # What is left is the noise: centred residuals of std ~0.05 in data units.
    assert norm.std.max() < 0.06
    assert torch.allclose(
        norm.denormalize(norm.normalize(planes[:5], attrs[:5]), attrs[:5]), planes[:5], atol=1e-4
    )
    # Unspecified attributes add nothing: the null condition's centre is the data mean.
    null = torch.from_numpy(null_indices())[None]
    assert torch.allclose(norm.centre(null)[0], planes.mean(0), atol=1e-3)
    # One attribute specified moves the centre by that attribute's (centred) effect only.
    one = null.clone()
    one[0, 5] = 3
    moved = norm.centre(one)[0] - norm.centre(null)[0]
    want = offsets[5][3] - offsets[5][attrs[:, 5]].mean(0)
    assert (moved - want).abs().max() < 0.1


class _PointMassDenoiser:
    """Exact v for data that is one plane: ``target`` in the conditional frame, ``target + shift`` in the null frame."""

    def __init__(self, target: torch.Tensor, shift: torch.Tensor, T: int = 100) -> None:
        self.target, self.shift = target, shift
        self.cfg = DiffusionConfig(time_steps=T)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a, s = (u[:, None, None, None] for u in alpha_sigma(t, self.cfg.time_steps))
        is_null = (cond == torch.from_numpy(null_indices())).all(1)[:, None, None, None]
        m = torch.where(is_null, self.target + self.shift, self.target)
        eps = (x - a * m) / s
        return a * eps - s * m


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.0])
def test_guidance_moves_the_unconditional_branch_into_the_conditional_frame(scale):
    g = torch.Generator().manual_seed(0)
    target, shift = torch.randn(1, 2, 4, 12, generator=g), torch.randn(1, 2, 4, 12, generator=g)
    model = _PointMassDenoiser(target, shift)
    cond = torch.from_numpy(condition_from_partial({"hair_style": "bob"}))[None]
    noise = torch.randn(1, 2, 4, 12, generator=g)
    out = ddim_sample(model, cond, noise, steps=10, guidance_scale=scale, uncond_shift=shift)
    # Both branches describe the same planes, so guidance at any scale lands on them.
    assert (out - target).abs().max() < 1e-3
    if scale != 1.0:  # without the shift, the branches disagree and guidance overshoots
        off = ddim_sample(model, cond, noise, steps=10, guidance_scale=scale)
        assert (off - target).abs().max() > 0.5


def test_axis_mix_routes_pooled_features_along_the_shared_axes():
    # With the norm removed and the projection set to pass the pooled features through, a
    # change confined to one texel line must reach exactly the texels that share its axis.
    torch.manual_seed(0)
    F_, R = 2, 6
    mix = AxisMix(F_)
    mix.norm = nn.Identity()
    with torch.no_grad():
        mix.proj.weight.copy_(torch.randn_like(mix.proj.weight))
    x = torch.randn(1, F_, R, 3 * R)
    base = mix(x)
    # 1. Change plane XY at row y=1, column x=4: XZ sees it only at column x=4 (its x profile),
    #    YZ only at column y=1 (its y profile); every row of those columns changes.
    x1 = x.clone()
    x1[..., 1, 4] += 1.0
    d = (mix(x1) - base).abs().sum(1)[0]  # (R, 3R)
    xz, yz = d[:, R : 2 * R], d[:, 2 * R :]
    assert (xz[:, 4] > 0).all() and xz[:, [0, 1, 2, 3, 5]].max() == 0
    assert (yz[:, 1] > 0).all() and yz[:, [0, 2, 3, 4, 5]].max() == 0
    # 2. Change plane YZ at row z=2, column y=3: XY sees it only at row y=3, XZ only at row z=2.
    x2 = x.clone()
    x2[..., 2, 2 * R + 3] += 1.0
    d = (mix(x2) - base).abs().sum(1)[0]
    xy, xz = d[:, :R], d[:, R : 2 * R]
    assert (xy[3] > 0).all() and xy[[0, 1, 2, 4, 5]].max() == 0
    assert (xz[2] > 0).all() and xz[[0, 1, 3, 4, 5]].max() == 0


def test_axis_mix_starts_as_identity():
    x = torch.randn(2, 4, 4, 12)
    assert torch.equal(AxisMix(4)(x), x)


def test_schedule_is_variance_preserving_and_monotone():
    t = torch.arange(1000)
    a, s = alpha_sigma(t, 1000)
    assert torch.allclose(a**2 + s**2, torch.ones(1000), atol=1e-5)
    assert (a[1:] <= a[:-1]).all()
    assert a[0] > 0.99 and a[-1] < 0.01


@dataclass
class _Cfg:
    time_steps: int = 1000


class _Oracle(nn.Module):
    """Predicts the exact v for a known clean sample: v = alpha eps - sigma x0 with eps from x_t."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.cfg = _Cfg()
        self.x0 = x0
        self.calls: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls.append(cond.clone())
        a, s = (u[:, None, None, None] for u in alpha_sigma(t, 1000))
        eps = (x - a * self.x0) / s
        return a * eps - s * self.x0


def test_ddim_with_an_exact_denoiser_returns_the_clean_sample():
    x0 = torch.randn(2, 3, 4, 12)
    model = _Oracle(x0)
    cond = torch.from_numpy(null_indices())[None].expand(2, -1)
    out = ddim_sample(model, cond, torch.randn(2, 3, 4, 12), steps=10, guidance_scale=1.0)
    assert torch.allclose(out, x0, atol=1e-4)
    assert len(model.calls) == 10  # one evaluation per step without guidance


def test_guidance_evaluates_conditional_and_null_condition_together():
    x0 = torch.randn(1, 2, 4, 12)
    model = _Oracle(x0)
    cond = torch.from_numpy(condition_from_partial({"hair_style": "bob"}))[None]
    out = ddim_sample(model, cond, torch.randn(1, 2, 4, 12), steps=4, guidance_scale=3.0)
    # The oracle ignores the condition, so v_u == v_c and guidance changes nothing.
    assert torch.allclose(out, x0, atol=1e-4)
    batch = model.calls[0]
    assert torch.equal(batch[0], cond[0]) and torch.equal(batch[1], torch.from_numpy(null_indices()))


def test_condition_vectors_round_trip_and_use_null_tokens():
    idx = condition_from_partial({"hair_style": "bun", "glasses": "round"})
    assert idx.shape == (len(ATTRIBUTE_NAMES),)
    h = ATTRIBUTE_NAMES.index("hair_style")
    assert idx[h] == VOCAB["hair_style"].index("bun")
    e = ATTRIBUTE_NAMES.index("eye_color")
    assert idx[e] == len(VOCAB["eye_color"])  # unspecified -> that attribute's null token
    assert partial_from_condition(idx) == {"hair_style": "bun", "glasses": "round"}
    with pytest.raises(AttributeValueError, match="use one of"):
        condition_from_partial({"hair_style": "mohawk"})
    with pytest.raises(AttributeValueError, match="known attributes"):
        condition_from_partial({"tail": "long"})


def test_condition_dropout_rates():
    gen = torch.Generator().manual_seed(0)
    idx = torch.zeros(2000, len(ATTRIBUTE_NAMES), dtype=torch.long)
    assert torch.equal(drop_conditions(idx, 0.0, 0.0, gen), idx)
    nulls = torch.tensor(VOCAB_SIZES)
    assert torch.equal(drop_conditions(idx, 1.0, 0.0, gen), nulls.expand_as(idx))
    # Per-attribute 0.3 with rows 0.1: P(null) = 1 - 0.7 * 0.9 = 0.37.
    out = drop_conditions(idx, 0.3, 0.1, gen)
    frac = (out == nulls).float().mean().item()
    assert abs(frac - 0.37) < 0.02
    whole = (out == nulls).all(1).float().mean().item()
    assert abs(whole - (0.1 + 0.9 * 0.3 ** len(ATTRIBUTE_NAMES))) < 0.02


def test_null_tokens_are_separate_embeddings():
    enc = AttributeEncoder(8)
    a = enc(torch.from_numpy(null_indices())[None])
    b = enc(torch.from_numpy(condition_from_partial({"age": "young"}))[None])
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="condition must be"):
        enc(torch.zeros(1, 3, dtype=torch.long))


TINY = DiffusionConfig(base_channels=8, channel_mults=(1, 2), patch=2, cond_dim=16, time_steps=100)


def test_unet_shapes_and_resolution_check():
    net = TriplaneUNet(4, 8, TINY)
    x = torch.randn(2, 4, 8, 24)
    cond = torch.from_numpy(null_indices())[None].expand(2, -1)
    assert net(x, torch.tensor([0, 99]), cond).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        TriplaneUNet(4, 6, TINY)


@pytest.mark.slow
def test_smoke_training_runs_checkpoints_resumes_and_samples(tmp_path):
    torch.manual_seed(0)
    planes = torch.randn(6, 3, 4, 8, 8)
    attrs = torch.from_numpy(np.stack([condition_from_partial({"age": a}) for a in ["young", "adult"] * 3]))
    attrs = torch.where(attrs == torch.tensor(VOCAB_SIZES), torch.zeros_like(attrs), attrs)  # full conditions
    ckpt = tmp_path / "d.pt"
    logs: list[str] = []
    state = train_diffusion(
        planes, attrs, TINY, DiffusionTrainConfig(steps=3, batch_size=4), ckpt, log=logs.append
    )
    assert state["step"] == 3 and ckpt.exists()
    assert torch.allclose(state["norm_mean"], planes.mean(0))
    state = train_diffusion(
        planes, attrs, TINY, DiffusionTrainConfig(steps=5, batch_size=4), ckpt, log=logs.append
    )
    assert state["step"] == 5
    assert any("resuming at step 3" in m for m in logs)
    # The model learns: the EMA weights differ from a fresh model's.
    net = TriplaneUNet(4, 8, TINY)
    net.load_state_dict(state["ema"])
    cond = attrs[:2]
    out = ddim_sample(
        net, cond, torch.randn(2, 4, 8, 24, generator=torch.Generator().manual_seed(1)), steps=3
    )
    assert out.shape == (2, 4, 8, 24) and torch.isfinite(out).all()

    # Out of time: the check raises, a checkpoint is still written at the current step.
    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_diffusion(planes, attrs, TINY, DiffusionTrainConfig(steps=9, batch_size=4), ckpt, check=stop)
    assert torch.load(ckpt, weights_only=False)["step"] == 5
