"""Latent-space rendering (Latent-NeRF, the "cpu" preset) against the pixel path (the "draft"
preset), one training step each, with guidance of SD 2.1-base's full size on this CPU.

    .venv/bin/python bench/text_to_3d_latent.py               # 1 warm-up + 2 timed steps per path
    .venv/bin/python bench/text_to_3d_latent.py --steps 3 --threads 2

The UNet, VAE and text encoder are SD 2.1-base's exact sizes with random weights, built from
their configs (nothing is downloaded; about 5 GB of RAM in fp32): the timings are a real
model's, the images are noise. Both paths share one guidance object, so they run on the same
weights in the same process, one after the other. Per step it prints the Trainer's split
(render = the NeRF forward; guidance = VAE encode (pixel path only) + UNet at batch 2 (CFG);
backward = VAE backward (pixel path only) + field backward + Adam), and within it the seconds
spent in the VAE encoder forward and the UNet, measured with forward hooks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.guidance.stable_diffusion import StableDiffusionGuidance
from core.guidance.tiny_sd import sd21_base_components, tiny_sd_components
from core.pipelines.text_to_3d import Trainer, preset_config


class ModuleTimer:
    """Wall seconds spent in a module's forward, from forward pre-hooks and hooks."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_: object) -> None:
        self._start = time.perf_counter()

    def _post(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self._start


def time_preset(preset: str, guidance: StableDiffusionGuidance, steps: int, timers: dict) -> dict:
    """Mean seconds of ``steps`` train steps after one warm-up step, with the split."""
    cfg = preset_config(preset)
    trainer = Trainer(cfg, guidance, seed=0)
    trainer.train_step()  # warm-up: allocator, first occupancy refresh
    rows = []
    for _ in range(steps):
        before = {k: t.seconds for k, t in timers.items()}
        started = time.perf_counter()
        s = trainer.train_step()
        rows.append(
            {
                "total": time.perf_counter() - started,
                "render": s.render_s,
                "guidance": s.guidance_s,
                "backward": s.backward_s,
                **{k: t.seconds - before[k] for k, t in timers.items()},
            }
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    mean["render_size"] = cfg.train.height
    mean["steps_in_preset"] = cfg.train.steps
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps per path (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny random components (a smoke run)")
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(
        f"machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average "
        f"{os.getloadavg()[0]:.1f} at start, torch {torch.__version__}",
        flush=True,
    )
    started = time.perf_counter()
    parts = tiny_sd_components() if args.tiny else sd21_base_components()
    sizes = {k: sum(p.numel() for p in parts[k].parameters()) / 1e6 for k in ("unet", "vae", "text_encoder")}
    print(
        f"components ({'tiny' if args.tiny else 'SD 2.1-base size'}, random weights, fp32): "
        + ", ".join(f"{k} {v:.1f} M" for k, v in sizes.items())
        + f"; built in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    guidance = StableDiffusionGuidance.from_components(**parts, prompt="a ceramic teapot", device="cpu")
    timers = {"vae_encode": ModuleTimer(guidance.vae.encoder), "unet": ModuleTimer(guidance.unet)}
    results = {}
    for preset in ("draft", "cpu"):
        r = results[preset] = time_preset(preset, guidance, args.steps, timers)
        path = "pixel (draft)" if preset == "draft" else "latent (cpu)"
        print(
            f"{path:<14} render {r['render_size']}px: {r['total']:7.2f} s/step = render {r['render']:.2f}"
            f" + guidance {r['guidance']:.2f} + backward {r['backward']:.2f}"
            f"  (VAE encoder forward {r['vae_encode']:.2f}, UNet {r['unet']:.2f});"
            f" {r['steps_in_preset']} steps = {r['total'] * r['steps_in_preset'] / 3600:.2f} h",
            flush=True,
        )
    speedup = results["draft"]["total"] / results["cpu"]["total"]
    print(f"latent path: {speedup:.2f}x faster per step than the pixel path")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other jobs share these CPUs)")
    print("json:", json.dumps({"speedup": speedup, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
