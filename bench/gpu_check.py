"""The text-to-3D GPU check: one prepared script for a session with a lent GPU, run in one call.

    .venv/bin/python bench/gpu_check.py                     # on the GPU machine (about 2-4 min)
    .venv/bin/python bench/gpu_check.py --json "$OUT/gpu_check.json"
    .venv/bin/python bench/gpu_check.py --tiny --device cpu # the smoke run the tests do

No hub can be reached from the GPU machines, so it builds SD 2.1-base's UNet, VAE and text
encoder at their full sizes with random weights from their configs, on the device (timings and
memory are a real model's; images are noise). It reports:

1. the image gradient through the VAE in fp16 (loss-scaled) against fp32: cosine and norm ratio;
2. one guidance call in fp16 (forward: VAE encode + UNet at batch 2; backward: into the
   render) at 512 and 768 px, with PyTorch's SDPA attention and with attention slicing, and the
   peak GPU memory of each;
3. ``Trainer.train_step`` of each preset (draft, cpu, standard, high) with its
   render/guidance/backward split, and each preset's projected wall time (steps x s/step);
4. one summary line starting ``gpu_check:``.

``--tiny`` swaps in the tiny random components and shrinks the presets' renders, so that the
whole script runs on a CPU in seconds (tests/text_to_3d/test_gpu_check.py does, so it cannot rot).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.guidance.base import GuidanceInput
from core.guidance.stable_diffusion import StableDiffusionGuidance
from core.guidance.tiny_sd import sd21_base_components, tiny_sd_components
from core.pipelines.text_to_3d import PRESETS, TextTo3DConfig, Trainer, preset_config
from core.render.cameras import CameraConfig, sample_cameras
from core.render.shading import albedo_shading

GIB = 1024.0**3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def build_components(tiny: bool, device: torch.device) -> dict[str, Any]:
    """Random components (fp32), created on ``device`` directly where torch allows it."""
    context = torch.device(device) if device.type == "cuda" else nullcontext()
    with context:
        return tiny_sd_components() if tiny else sd21_base_components()


def guidance_for(parts: dict[str, Any], device: torch.device, dtype: torch.dtype) -> StableDiffusionGuidance:
    return StableDiffusionGuidance.from_components(
        **parts, prompt="a ceramic teapot", device=device, dtype=dtype
    )


def guidance_input(batch: int, size: int, device: torch.device, seed: int = 0) -> GuidanceInput:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=gen).to(device).requires_grad_(True)
    return GuidanceInput(images, sample_cameras(CameraConfig(), batch, gen), albedo_shading(batch), 0, 100)


def image_gradient(guidance: StableDiffusionGuidance, inp: GuidanceInput) -> torch.Tensor:
    images = inp.images.detach().clone().requires_grad_(True)
    guidance(dataclasses.replace(inp, images=images), torch.Generator().manual_seed(0)).loss.backward()
    return images.grad.detach().float().flatten()


def fp16_vs_fp32(parts32: dict[str, Any], device: torch.device, render: int) -> dict[str, float]:
    """Cosine and norm ratio of the render's gradient with the fp16 (loss-scaled) against the
    fp32 guidance, same weights, same noise."""
    parts16 = copy.deepcopy(parts32)
    inp = guidance_input(1, render, device)
    g32 = image_gradient(guidance_for(parts32, device, torch.float32), inp)
    g16 = image_gradient(guidance_for(parts16, device, torch.float16), inp)
    del parts16
    return {
        "cosine": float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)),
        "norm_ratio": float(g16.norm() / g32.norm().clamp(min=1e-30)),
    }


def set_attention(guidance: StableDiffusionGuidance, slicing: bool) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    if slicing:
        guidance.unet.set_attention_slice("auto")
    else:
        guidance.unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA, diffusers' default


def time_guidance(
    guidance: StableDiffusionGuidance, resolution: int, slicing: bool, repeats: int, render: int
) -> dict[str, Any]:
    """Seconds of one guidance call (forward, and backward into the render) and the peak memory."""
    device = guidance.device
    native = guidance.resolution
    guidance.resolution = resolution
    set_attention(guidance, slicing)
    try:
        inp = guidance_input(1, render, device)
        guidance(inp, torch.Generator().manual_seed(0)).loss.backward()  # warm-up (kernels, allocator)
        reset_peak(device)
        fwd = bwd = 0.0
        for i in range(repeats):
            images = inp.images.detach().clone().requires_grad_(True)
            sync(device)
            t0 = time.perf_counter()
            out = guidance(dataclasses.replace(inp, images=images), torch.Generator().manual_seed(i))
            sync(device)
            t1 = time.perf_counter()
            out.loss.backward()
            sync(device)
            fwd += t1 - t0
            bwd += time.perf_counter() - t1
        return {
            "resolution": resolution,
            "slicing": slicing,
            "forward_s": fwd / repeats,
            "backward_s": bwd / repeats,
            "peak_gib": peak_gib(device),
        }
    finally:
        guidance.resolution = native
        set_attention(guidance, False)


def tiny_preset(cfg: TextTo3DConfig, size: int) -> TextTo3DConfig:
    """A preset with its structure kept but renders, samples and grids small (the --tiny run)."""
    enc = dataclasses.replace(cfg.field.encoding, levels=3, log2_table_size=12, max_resolution=32)
    return dataclasses.replace(
        cfg,
        field=dataclasses.replace(cfg.field, encoding=enc, hidden=16),
        renderer=dataclasses.replace(cfg.renderer, samples_per_ray=16),
        occupancy=dataclasses.replace(cfg.occupancy, resolution=8),
        train=dataclasses.replace(cfg.train, height=size, width=size),
    )


def time_preset(
    preset: str, guidance: StableDiffusionGuidance, steps: int, tiny: bool, warmup: int = 2
) -> dict[str, Any]:
    """Mean ``train_step`` seconds and split of a preset, and its projected wall time."""
    cfg = preset_config(preset)
    if tiny:
        cfg = tiny_preset(cfg, 16)
    trainer = Trainer(cfg, guidance, seed=0, device=str(guidance.device))
    for _ in range(warmup):
        trainer.train_step()
    reset_peak(guidance.device)
    stats = [trainer.train_step() for _ in range(steps)]
    split = {k: sum(getattr(s, f"{k}_s") for s in stats) / steps for k in ("render", "guidance", "backward")}
    step_s = sum(split.values())
    total_steps = preset_config(preset).train.steps
    return {
        "preset": preset,
        "render_px": cfg.train.height,
        "space": cfg.space,
        "step_s": step_s,
        **{f"{k}_s": v for k, v in split.items()},
        "steps": total_steps,
        "projected_min": step_s * total_steps / 60.0,
        "peak_gib": peak_gib(guidance.device),
        "loss_finite": all(math.isfinite(s.loss) for s in stats),
    }


def fmt_gib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}GiB"


def summary_line(report: dict[str, Any]) -> str:
    g = " ".join(
        f"{r['resolution']}{'sliced' if r['slicing'] else 'sdpa'}={r['forward_s'] + r['backward_s']:.3f}s/{fmt_gib(r['peak_gib'])}"
        for r in report["guidance"]
    )
    p = " ".join(
        f"{r['preset']}={r['step_s']:.3f}s/step(r{r['render_s']:.3f}+g{r['guidance_s']:.3f}+b{r['backward_s']:.3f})"
        f"->{r['projected_min']:.1f}min"
        for r in report["presets"]
    )
    v = report["vae_fp16_vs_fp32"]
    return (
        f"gpu_check: device={report['device']} components={report['components']} | guidance fp16 {g}"
        f" | {p} | vae fp16/fp32 cos={v['cosine']:.4f} norm_ratio={v['norm_ratio']:.4f}"
        f" | wall={report['wall_s']:.0f}s"
    )


def run(
    tiny: bool, device: torch.device, repeats: int, train_steps: int, presets: list[str]
) -> dict[str, Any]:
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    parts = build_components(tiny, device)
    print(f"components built in {time.perf_counter() - started:.0f} s", flush=True)
    render = 16 if tiny else 64
    report: dict[str, Any] = {"device": name.replace(" ", "_"), "components": "tiny" if tiny else "sd21base"}

    # 1. fp16 against fp32 through the VAE (the fp32 copy is dropped afterwards).
    report["vae_fp16_vs_fp32"] = fp16_vs_fp32(parts, device, render)
    print(f"1. VAE gradient fp16 vs fp32: {report['vae_fp16_vs_fp32']}", flush=True)
    for key in ("unet", "vae", "text_encoder"):
        parts[key] = parts[key].half()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2. One guidance call in fp16 at the native size and 1.5x (512 and 768 for SD 2.1-base).
    guidance = guidance_for(parts, device, torch.float16)
    native = guidance.resolution
    report["guidance"] = []
    for resolution in (native, native * 3 // 2):
        for slicing in (False, True):
            r = time_guidance(guidance, resolution, slicing, repeats, render)
            report["guidance"].append(r)
            print(f"2. guidance {r}", flush=True)

    # 3. Train steps of each preset, and the projected wall time.
    report["presets"] = []
    for preset in presets:
        r = time_preset(preset, guidance, train_steps, tiny)
        report["presets"].append(r)
        print(f"3. preset {r}", flush=True)
    report["wall_s"] = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random components, tiny renders (CPU smoke run)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed guidance calls per cell")
    parser.add_argument(
        "--train-steps", type=int, default=8, help="timed train steps per preset (after 2 warm-up)"
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        print("no GPU: the full-size check is for a GPU machine; --tiny runs the CPU smoke version")
        return 2
    report = run(args.tiny, device, args.repeats, args.train_steps, args.presets)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    print(summary_line(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
