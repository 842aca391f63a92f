"""Benchmark of the text-to-3D engine on this machine: speed per step, time split, reconstruction.

    .venv/bin/python bench/text_to_3d.py                    # budgets 200 and 1000 steps
    .venv/bin/python bench/text_to_3d.py --budgets 200 --speed-steps 5

1. Reconstruction: SDS with the exact-denoiser guidance toward renders of a known shape (a
   sphere, an asymmetric shape); Chamfer distance of the marching-cubes surface to the truth
   after each budget of steps, with the draft preset's field and renderer.
2. Speed: steps per second at the draft (64 px) and standard (128 px) render sizes, every
   step shaded (lambertian/textureless need normals: DreamFusion's usual step), guidance
   from a tiny random SD pipeline, on 1 and 2 threads. Kiln's renderer (occupancy grid,
   early termination, finite-difference normals) against a plain-PyTorch NeRF of the same
   size (every sample evaluated, autograd normals with a second backward), both starting
   from the same trained field.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.fields.nerf import NeRFAssetField
from core.guidance.exact import ExactDenoiserGuidance
from core.guidance.targets import (
    ReferenceShape,
    RenderedTargets,
    asymmetric_shape,
    shape_chamfer,
    sphere_shape,
)
from core.pipelines.text_to_3d import TextTo3DConfig, Trainer, preset_config


def recon_config(steps: int) -> TextTo3DConfig:
    """The draft preset with a fixed white background (the targets have one)."""
    cfg = preset_config("draft")
    return dataclasses.replace(cfg, background="fixed", train=dataclasses.replace(cfg.train, steps=steps))


def chamfer(trainer: Trainer, shape: ReferenceShape) -> float:
    """Chamfer distance (m) of the trained field's iso-surface to the shape's."""
    distance = shape_chamfer(NeRFAssetField(trainer.nerf), shape)
    trainer.nerf.train()
    return distance


def reconstruction(name: str, shape: ReferenceShape, budgets: list[int]) -> Trainer:
    trainer = Trainer(recon_config(max(budgets)), ExactDenoiserGuidance(RenderedTargets(shape)), seed=0)
    print(f"  {name:<11} step {0:>5}: Chamfer {chamfer(trainer, shape) * 1000:6.1f} mm (the initial blob)")
    started, cpu_started = time.perf_counter(), time.process_time()
    for budget in sorted(budgets):
        while trainer.step < budget:
            trainer.train_step()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(
            f"  {name:<11} step {budget:>5}: Chamfer {chamfer(trainer, shape) * 1000:6.1f} mm"
            f"  after {elapsed:6.1f} s wall, {cpu:6.1f} s CPU ({cpu / budget:.3f} CPU s/step incl. target renders)",
            flush=True,
        )
    return trainer


class FieldTimer:
    """Adds up CPU time spent in the field's forward evaluations (every one goes through ``_raw``)."""

    def __init__(self, trainer: Trainer) -> None:
        self.seconds = 0.0
        self.points = 0
        nerf = trainer.nerf
        inner = nerf._raw

        def timed(x: torch.Tensor) -> torch.Tensor:
            t = time.process_time()
            out = inner(x)
            self.seconds += time.process_time() - t
            self.points += x.shape[0]
            return out

        nerf._raw = timed  # type: ignore[method-assign]


def field_fwd_bwd_seconds(trainer: Trainer, points: int) -> tuple[float, float]:
    """Forward and forward+backward CPU time of the bare field on ``points`` points in the box."""
    nerf = copy.deepcopy(trainer.nerf)
    x = (torch.rand(points, 3) - 0.5) * 2 * nerf.bound * 0.8
    t = time.process_time()
    with torch.no_grad():
        nerf(x)
    fwd = time.process_time() - t
    t = time.process_time()
    sigma, albedo = nerf(x)
    (sigma.sum() + albedo.sum()).backward()
    return fwd, time.process_time() - t


def speed(base: Trainer, tiny_sd: Path, size: int, plain: bool, steps: int) -> dict[str, float]:
    """Seconds per shaded step from a copy of ``base``, with tiny-SD guidance."""
    from core.guidance.stable_diffusion import StableDiffusionGuidance

    cfg = base.config
    renderer = cfg.renderer
    if plain:
        renderer = dataclasses.replace(renderer, transmittance_threshold=0.0, normals="autograd")
    cfg = dataclasses.replace(
        cfg,
        renderer=renderer,
        occupancy=dataclasses.replace(cfg.occupancy, enabled=not plain),
        shading=dataclasses.replace(cfg.shading, warmup_steps=0, albedo_ratio=0.0),
        train=dataclasses.replace(cfg.train, height=size, width=size, steps=base.step + 2 + steps),
    )
    guidance = StableDiffusionGuidance(str(tiny_sd), "a small animal", config=cfg.sds)
    trainer = Trainer(cfg, guidance, seed=1)
    state = base.state_dict()
    trainer.nerf.load_state_dict(state["nerf"])
    trainer.step = base.step
    if trainer.occupancy is not None:
        trainer.occupancy.load_state_dict(state["occupancy"])
    for _ in range(2):  # warm-up: allocator, first occupancy refresh
        trainer.train_step()
    timer = FieldTimer(trainer)
    stats = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(steps):
        stats.append(trainer.train_step())
    total = (time.perf_counter() - started) / steps
    cpu = (time.process_time() - cpu_started) / steps
    field_fwd = timer.seconds / steps
    points = timer.points // steps
    fwd, fwd_bwd = field_fwd_bwd_seconds(trainer, points)
    # Field backward, scaled from the isolated measurement to the points evaluated with grad.
    field_total = field_fwd + max(fwd_bwd - fwd, 0.0) * (field_fwd / max(fwd, 1e-9))
    wall = [s.render_s + s.guidance_s + s.backward_s for s in stats]
    return {
        "s_per_step": total,
        "cpu_per_step": cpu,
        "render": float(np.mean([s.render_s / w for s, w in zip(stats, wall, strict=True)])),
        "guidance": float(np.mean([s.guidance_s / w for s, w in zip(stats, wall, strict=True)])),
        "backward": float(np.mean([s.backward_s / w for s, w in zip(stats, wall, strict=True)])),
        "field": min(field_total / max(cpu, 1e-9), 1.0),
        "samples": float(np.mean([s.samples for s in stats])),
        "candidates": float(np.mean([s.candidates for s in stats])),
        "field_points": float(points),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=[200, 1000], help="reconstruction step budgets"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--speed-steps", type=int, default=8, help="timed steps per speed cell")
    parser.add_argument("--shapes", nargs="+", default=["sphere", "asymmetric"])
    parser.add_argument("--skip-speed", action="store_true", help="only the reconstruction part")
    args = parser.parse_args()

    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore")
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, torch {torch.__version__}"
    )
    torch.set_num_threads(max(args.threads))
    print(f"\n1. Reconstruction with the exact-denoiser SDS, draft preset, {torch.get_num_threads()} threads")
    shapes = {"sphere": sphere_shape, "asymmetric": asymmetric_shape}
    trained = {name: reconstruction(name, shapes[name](), args.budgets) for name in args.shapes}
    base = trained[args.shapes[-1]]
    if args.skip_speed:
        return 0

    from core.guidance.tiny_sd import build_tiny_sd_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_sd_pipeline(Path(tmp) / "tiny_sd")
        print(f"\n2. Speed, every step shaded, tiny SD guidance, from the field trained {base.step} steps")
        print(
            "wall: seconds per step on the clock; CPU: process CPU seconds per step (what the step costs\n"
            "on an idle machine at 1 thread); steps/s from CPU. render/guidance/backward: shares of the\n"
            "step (forward render incl. field, guidance forward, all backward); field: forward + backward\n"
            "of the field's encoding and MLPs (estimated), share of CPU time."
        )
        header = (
            "threads  size  renderer        wall s/step  CPU s/step  steps/s  render  guidance  backward"
            "  field  samples/candidates"
        )
        print(header)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for size in (64, 128):
                for plain in (False, True):
                    r = speed(base, tiny, size, plain, args.speed_steps)
                    name = "plain NeRF" if plain else "kiln"
                    print(
                        f"{threads:>7}  {size:>4}  {name:<15} {r['s_per_step']:11.3f}  {r['cpu_per_step']:10.3f}"
                        f"  {1 / r['cpu_per_step']:7.2f}"
                        f"  {r['render']:6.0%}  {r['guidance']:8.0%}  {r['backward']:8.0%}"
                        f"  {r['field']:5.0%}"
                        f"  {r['samples']:8.0f}/{r['candidates']:.0f}",
                        flush=True,
                    )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other jobs share these CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
