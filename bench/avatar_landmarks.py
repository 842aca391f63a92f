"""Landmark error of generated-style avatars, and what rigging costs, on this machine.

    python -m bench.avatar_landmarks                 # 8 held-out avatars, the shipped model
    python -m bench.avatar_landmarks --n 24 --json out.json

A generated avatar has no exact landmarks: ``core.avatar.landmarks`` fits the engine's head
model on its decoded surface. To measure that fit against the truth, each held-out engine avatar
(seed base ``LANDMARK_BASE``, never used in training) is turned into the model's own
representation: tri-planes fitted to the engine's points with the shipped decoder frozen
(``fit_planes``, the training run's fit settings, started from the model's mean planes for the
avatar's attributes). The fitted field is meshed as the asset path meshes it, the landmarks are
fitted on its vertices, and each is compared with the engine's exact landmark.

It also times what rigging adds to an avatar job: the landmark fit and ``build_rig`` on the same
meshes (the asset path's ``rig`` stage), and whole avatar jobs with ``rig`` on against off.
Figures are CPU seconds of this process (the machine is shared; wall clock is not).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from core.assets.mesh import extract_mesh
from core.assets.rig import build_rig
from core.avatar.landmarks import LANDMARK_NAMES, estimate_landmarks
from core.avatar.model import default_model
from core.avatar.model.train import make_points, set_identity
from core.avatar.model.triplane import FitConfig, PointSet, fit_planes
from core.avatar.procedural.engine import AvatarField

LANDMARK_BASE = 9700
"""Seed base of the held-out avatars (training uses 1000; bench.avatar_eval 9000..9003, the
gallery 9500)."""
FIT = FitConfig(steps=80, n_uniform=64, n_near=224, lr_planes=3e-2)
"""The shipped model's training fit (``train.preset("cpu4").fit``)."""
TARGET_MM = 4.0


def fitted_field(model, attrs, seed: int):
    """The model's tri-plane field fitted to engine avatar (attrs, seed)."""
    pts = make_points(attrs, seed, 4096, 8192, 8192)
    t = {k: torch.from_numpy(np.asarray(v, np.float32))[None] for k, v in pts.items()}
    t["near_rgb"] = t["near_rgb"] / 255.0
    points = PointSet(
        t["uniform_xyz"], t["uniform_sdf"], t["near_xyz"], t["near_sdf"], t["near_rgb"], t["near_part"].long()
    )
    init = model.generate(attrs.to_dict(), seed=seed, steps=1, variation=0.0)
    planes = fit_planes(model.decoder, points, FIT, init=init, seed=seed)
    return model.field(planes[0])


def cpu() -> float:
    return time.process_time()


def job_cost(n: int) -> dict[str, float]:
    """CPU seconds of whole avatar jobs (the default output, no video), rigged and not."""
    import tempfile

    from core.pipelines.jobs import run_job
    from core.progress import Reporter

    out: dict[str, list[float]] = {"rigged": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            for name, rig in (("rigged", True), ("bare", False)):
                params = {"seed": 40 + i, "rig": rig, "output": {"turntable_frames": 0}}
                t = cpu()
                run_job("avatar", params, Path(tmp) / f"{name}{i}", Reporter())
                out[name].append(cpu() - t)
    cost = {k: float(np.median(v)) for k, v in out.items()}
    print(
        f"avatar job (default output, no video), median of {n}: rigged {cost['rigged']:.2f} CPU s, "
        f"bare {cost['bare']:.2f} CPU s: rigging adds {cost['rigged'] - cost['bare']:.2f} s (target <= 1 s)"
    )
    return cost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="held-out avatars (default 8)")
    ap.add_argument("--resolution", type=int, default=128, help="marching-cubes grid, as a job's default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=3, help="whole avatar jobs timed rigged and bare (0: skip)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = default_model()

    errors: list[dict[str, float]] = []
    fit_s, rig_s, residual = [], [], []
    for i in range(args.n):
        attrs, seed = set_identity(LANDMARK_BASE, i)
        truth = AvatarField(attrs, seed=seed).landmarks()
        field = fitted_field(model, attrs, seed)
        mesh = extract_mesh(field, args.resolution)
        t = cpu()
        est = estimate_landmarks(field, mesh.vertices, attrs)
        fit_s.append(cpu() - t)
        t = cpu()
        build_rig(mesh.vertices, est.points, est.eye_radius)
        rig_s.append(cpu() - t)
        residual.append(est.residual_mm)
        errors.append({k: float(np.linalg.norm(est.points[k] - truth[k]) * 1000) for k in LANDMARK_NAMES})
        worst = max(errors[-1], key=errors[-1].get)
        print(
            f"avatar {i}: mean {np.mean(list(errors[-1].values())):.2f} mm, worst {worst} "
            f"{errors[-1][worst]:.2f} mm, fit residual {est.residual_mm:.2f} mm, "
            f"landmarks {fit_s[-1]:.2f} s, rig {rig_s[-1]:.2f} s",
            flush=True,
        )

    table = {k: np.array([e[k] for e in errors]) for k in LANDMARK_NAMES}
    every = np.concatenate(list(table.values()))
    print(f"\nlandmark error on {args.n} held-out fitted avatars (mm; target <= {TARGET_MM:g}):")
    print(f"  {'landmark':10s} {'mean':>6s} {'p90':>6s} {'max':>6s}")
    for k, v in table.items():
        print(f"  {k:10s} {v.mean():6.2f} {np.percentile(v, 90):6.2f} {v.max():6.2f}")
    print(
        f"  {'all':10s} {every.mean():6.2f} {np.percentile(every, 90):6.2f} {every.max():6.2f}"
        f"   ({int((every <= TARGET_MM).sum())} of {every.size} landmarks within {TARGET_MM:g} mm)"
    )
    print(
        f"rigging cost per avatar (CPU s): landmark fit {np.mean(fit_s):.2f} (max {max(fit_s):.2f}), "
        f"build_rig {np.mean(rig_s):.2f}, together {np.mean(fit_s) + np.mean(rig_s):.2f}"
    )
    job = job_cost(args.jobs)
    report = {
        "job_cpu_s": job,
        "n": args.n,
        "base": LANDMARK_BASE,
        "resolution": args.resolution,
        "error_mm": {
            k: {"mean": float(v.mean()), "p90": float(np.percentile(v, 90)), "max": float(v.max())}
            for k, v in table.items()
        },
        "error_mm_all": {
            "mean": float(every.mean()),
            "p90": float(np.percentile(every, 90)),
            "max": float(every.max()),
            "within_target": float((every <= TARGET_MM).mean()),
        },
        "fit_residual_mm": float(np.mean(residual)),
        "landmark_fit_cpu_s": float(np.mean(fit_s)),
        "build_rig_cpu_s": float(np.mean(rig_s)),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
