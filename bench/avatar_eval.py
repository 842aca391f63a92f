"""Evaluate the avatar model on held-out engine avatars: geometry, faithfulness to prompts, speed.

Usage::

    python -m bench.avatar_eval                      # shipped model, 16 held-out avatars
    python -m bench.avatar_eval --n 32 --json out.json --speed-batch 16

Geometry (as in the tri-plane diffusion papers): MMD, COV and 1-NNA with the Chamfer distance
between surface point sets of generated avatars and held-out engine avatars (seeds never used
in training), next to the train-vs-test floor (engine avatars from the training seeds in place
of generated ones) and a mean-tri-plane baseline (the training mean decoded, for every sample).

Faithfulness: a per-attribute logistic-regression classifier trained on engine avatars'
descriptors (occupancy on a 20^3 grid + surface colour in 6^3 cells) reads the attributes back
from avatars generated for template prompts and for paraphrases (through the prompt parser);
reported against chance (the majority value) and against the classifier's accuracy on held-out
engine avatars (its ceiling).

Speed: seconds per avatar for sampling, and end to end with GLB (no video), and for a batch.
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

from core.avatar.attributes import ATTRIBUTE_NAMES, VOCAB, AvatarAttributes, describe, sample_attributes
from core.avatar.engine import AvatarField
from core.avatar.model import WEIGHTS_DIR, AvatarModel
from core.fields.base import Field

HELD_OUT_BASE = 9000
"""Seed base of held-out avatars (training uses 1000, the classifier 5000)."""
CLASSIFIER_BASE = 5000
TRAIN_BASE = 1000


def identity(base: int, i: int) -> tuple[AvatarAttributes, int]:
    """Attributes and engine seed of avatar ``i`` of the set ``base`` (same rule as core.avatar.train)."""
    return sample_attributes(np.random.default_rng([base, i])), base * 100000 + i


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ---------------------------------------------------------------------------------------
# Surfaces and distances.


def surface_points(field: Field, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points on the field's zero level set (two gradient projections) -> (n, 3)."""
    lo, hi = np.asarray(field.bbox_min), np.asarray(field.bbox_max)
    pts = np.zeros((0, 3), np.float32)
    for _ in range(10):
        c = rng.uniform(lo, hi, (40000, 3)).astype(np.float32)
        d = field.value(c)
        c = c[np.abs(d) < 0.03]
        for _ in range(2):
            d = field.value(c)
            e = 1e-3
            g = np.stack(
                [field.value(c + e * u) - field.value(c - e * u) for u in np.eye(3, dtype=np.float32)], 1
            )
            g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
            c = (c - d[:, None] * g).astype(np.float32)
        pts = np.concatenate([pts, c[np.abs(field.value(c)) < 0.003]])
        if len(pts) >= n:
            break
    if len(pts) == 0:
        return np.zeros((n, 3), np.float32)  # an empty field: far from everything
    return pts[rng.integers(0, len(pts), n)]


def chamfer_matrix(A: list[np.ndarray], B: list[np.ndarray]) -> np.ndarray:
    """Chamfer distance (mean squared nearest-neighbour distance, both ways, in cm^2) -> (|A|, |B|)."""
    out = np.zeros((len(A), len(B)))
    for i, a in enumerate(A):
        ta = torch.from_numpy(a * 100)
        for j, b in enumerate(B):
            d = torch.cdist(ta, torch.from_numpy(b * 100)) ** 2
            out[i, j] = float(d.min(1).values.mean() + d.min(0).values.mean())
    return out


def set_metrics(gen: list[np.ndarray], ref: list[np.ndarray]) -> dict[str, float]:
    """MMD (lower better), COV (higher better) and 1-NNA (0.5 ideal) of ``gen`` against ``ref``."""
    gr = chamfer_matrix(gen, ref)
    gg = chamfer_matrix(gen, gen)
    rr = chamfer_matrix(ref, ref)
    mmd = float(gr.min(0).mean())
    cov = len(set(gr.argmin(1).tolist())) / len(ref)
    # 1-NNA: leave-one-out 1-nearest-neighbour classification of the union.
    n, m = len(gen), len(ref)
    full = np.block([[gg, gr], [gr.T, rr]])
    np.fill_diagonal(full, np.inf)
    labels = np.array([0] * n + [1] * m)
    acc = float(np.mean(labels[full.argmin(1)] == labels))
    return {"MMD_cm2": mmd, "COV": cov, "1-NNA": acc}


# ---------------------------------------------------------------------------------------
# Attribute classifier.


def descriptor(field: Field, rng: np.random.Generator, grid: int = 20, cells: int = 6) -> np.ndarray:
    """Occupancy on a grid^3 lattice + mean surface colour per cells^3 cell -> (grid^3 + 3 cells^3,)."""
    lo, hi = float(field.bbox_min[0]), float(field.bbox_max[0])
    c = (np.arange(grid) + 0.5) / grid * (hi - lo) + lo
    lattice = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    occ = (field.value(lattice) < 0).astype(np.float32)
    s = surface_points(field, 1500, rng)
    rgb = field.albedo(s)
    cell = np.clip(((s - lo) / (hi - lo) * cells).astype(int), 0, cells - 1)
    flat = (cell[:, 0] * cells + cell[:, 1]) * cells + cell[:, 2]
    col = np.zeros((cells**3, 3))
    cnt = np.bincount(flat, minlength=cells**3)[:, None]
    np.add.at(col, flat, rgb)
    col = col / np.maximum(cnt, 1)
    return np.concatenate([occ * 0.5, col.reshape(-1)]).astype(np.float32)


class AttributeClassifier:
    """One multinomial logistic regression per attribute over descriptors."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, steps: int = 300, l2: float = 1e-3) -> None:
        self.mu, self.sd = X.mean(0), X.std(0) + 1e-3
        Xt = torch.from_numpy((X - self.mu) / self.sd)
        self.heads, self.majority = [], []
        for a, name in enumerate(ATTRIBUTE_NAMES):
            k = len(VOCAB[name])
            y = torch.from_numpy(Y[:, a])
            W = torch.zeros(X.shape[1], k, requires_grad=True)
            b = torch.zeros(k, requires_grad=True)
            opt = torch.optim.LBFGS([W, b], max_iter=steps, line_search_fn="strong_wolfe")

            def closure(W=W, b=b, y=y, opt=opt) -> torch.Tensor:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(Xt @ W + b, y) + l2 * W.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)
            self.heads.append((W.detach(), b.detach()))
            self.majority.append(float(np.bincount(Y[:, a], minlength=k).max() / len(Y)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        Xt = torch.from_numpy((X - self.mu) / self.sd)
        return np.stack([(Xt @ W + b).argmax(1).numpy() for W, b in self.heads], 1)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--n", type=int, default=16, help="held-out avatars for the geometry metrics")
    ap.add_argument("--n-classifier", type=int, default=240, help="engine avatars to train the classifier on")
    ap.add_argument("--n-prompts", type=int, default=24, help="prompts per kind (template, paraphrase)")
    ap.add_argument("--points", type=int, default=1024, help="surface points per avatar")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--speed-batch", type=int, default=16, help="batch size of the batch timing (0 = skip)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy CPU)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--cache", type=Path, default=None, help="folder to keep engine-side results between runs"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from core.avatar.model import DEFAULT_GUIDANCE
    from core.avatar.prompt import parse_prompt

    scale = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    model = AvatarModel.load(args.weights)
    rng = np.random.default_rng(0)
    report: dict = {"n": args.n, "guidance_scale": scale, "ddim_steps": args.steps}
    t_all = time.perf_counter()

    def cached(name: str, make):  # engine-side arrays do not depend on the model
        path = args.cache / f"{name}.npy" if args.cache else None
        if path is not None and path.is_file():
            return np.load(path)
        arr = np.asarray(make())
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, arr)
        return arr

    # 1. Geometry.
    held = [identity(HELD_OUT_BASE, i) for i in range(args.n)]
    ref = list(
        cached(
            f"ref_{args.n}_{args.points}",
            lambda: [surface_points(AvatarField(a, s), args.points, rng) for a, s in held],
        )
    )
    planes = torch.cat(
        [
            model.generate(a.to_dict(), seed=i, guidance_scale=scale, steps=args.steps)
            for i, (a, _) in enumerate(held)
        ]
    )
    gen = [surface_points(model.field(p), args.points, rng) for p in planes]
    floor = list(
        cached(
            f"floor_{args.n}_{args.points}",
            lambda: [
                surface_points(AvatarField(*identity(TRAIN_BASE, i)), args.points, rng) for i in range(args.n)
            ],
        )
    )
    mean_surface = surface_points(model.field(model.normalizer.mean), args.points, rng)
    report["geometry"] = {
        "generated": set_metrics(gen, ref),
        "train_vs_test_floor": set_metrics(floor, ref),
        "mean_triplane": set_metrics([mean_surface] * args.n, ref),
    }
    print("geometry (Chamfer in cm^2; COV higher is better; 1-NNA 0.5 is ideal)")
    for k, v in report["geometry"].items():
        print(f"  {k:22s} MMD {v['MMD_cm2']:.3f}  COV {v['COV']:.2f}  1-NNA {v['1-NNA']:.2f}")

    # 2. Faithfulness.
    cls_set = [identity(CLASSIFIER_BASE, i) for i in range(args.n_classifier)]
    X = cached(f"clf_X_{args.n_classifier}", lambda: [descriptor(AvatarField(a, s), rng) for a, s in cls_set])
    Y = np.stack([a.indices() for a, _ in cls_set])
    clf = AttributeClassifier(X, Y)
    Xh = cached(f"held_X_{args.n}", lambda: [descriptor(AvatarField(a, s), rng) for a, s in held])
    ceiling = (clf.predict(Xh) == np.stack([a.indices() for a, _ in held])).mean(0)
    kinds: dict[str, dict[str, list[int]]] = {}
    for kind in ("template", "paraphrase"):
        hits: dict[str, list[int]] = {n: [] for n in ATTRIBUTE_NAMES}
        for i in range(args.n_prompts):
            truth, _ = identity(HELD_OUT_BASE + 1, i)
            text = describe(truth) if kind == "template" else describe(truth, np.random.default_rng([7, i]))
            parsed = parse_prompt(text).attributes
            p = model.generate(parsed, seed=100 + i, guidance_scale=scale, steps=args.steps)[0]
            pred = clf.predict(descriptor(model.field(p), rng)[None])[0]
            for a, name in enumerate(ATTRIBUTE_NAMES):
                if name in parsed:  # only what the prompt asked for
                    hits[name].append(int(pred[a] == VOCAB[name].index(getattr(truth, name))))
        kinds[kind] = hits
    report["attributes"] = {}
    print("attribute accuracy read back by the classifier, on the attributes each prompt names")
    print(
        "(chance = always guessing the commonest true value of that subset; engine = the classifier's ceiling)"
    )
    print(f"  {'attribute':15s} {'chance':>7s} {'engine':>7s} {'template':>9s} {'paraphrase':>11s}")
    truths = {
        n: [getattr(identity(HELD_OUT_BASE + 1, i)[0], n) for i in range(args.n_prompts)]
        for n in ATTRIBUTE_NAMES
    }
    for a, name in enumerate(ATTRIBUTE_NAMES):
        named = [
            t for i, t in enumerate(truths[name])
            if name in parse_prompt(describe(identity(HELD_OUT_BASE + 1, i)[0])).attributes
        ]  # fmt: skip
        chance = max(named.count(v) for v in set(named)) / len(named) if named else None
        row = {
            "chance": chance,
            "engine_ceiling": float(ceiling[a]),
            "template": float(np.mean(kinds["template"][name])) if kinds["template"][name] else None,
            "paraphrase": float(np.mean(kinds["paraphrase"][name])) if kinds["paraphrase"][name] else None,
        }
        report["attributes"][name] = row
        fmt = lambda v: "   -" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"  {name:15s} {fmt(row['chance']):>7s} {fmt(row['engine_ceiling']):>7s} "
            f"{fmt(row['template']):>9s} {fmt(row['paraphrase']):>11s}"
        )

    # 3. Speed.
    from core.assets import AssetOptions, build_asset

    opts = AssetOptions(resolution=128, texture_size=512, turntable_frames=0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t, c = time.perf_counter(), cpu_seconds()
        p = model.generate({"hair_style": "bob"}, seed=1, guidance_scale=scale, steps=args.steps)
        t_sample = time.perf_counter() - t
        res = build_asset(model.field(p[0]), Path(tmp) / "one", opts, name="avatar")
        t_one = time.perf_counter() - t
        # CPU seconds of this process and its finished children: about what the wall time
        # would be on an otherwise idle core (the shared CPU here is heavily oversubscribed).
        speed = {
            "sample_one_s": t_sample,
            "one_end_to_end_glb_s": t_one,
            "one_end_to_end_glb_cpu_s": cpu_seconds() - c,
            "asset_timings_s": res.stats.get("timings"),
        }
        if args.speed_batch:
            t = time.perf_counter()
            pb = model.generate({}, seed=2, n=args.speed_batch, guidance_scale=scale, steps=args.steps)
            speed[f"sample_batch{args.speed_batch}_s"] = time.perf_counter() - t
            for i, q in enumerate(pb):
                build_asset(model.field(q), Path(tmp) / f"b{i}", opts, name="avatar")
            speed[f"batch{args.speed_batch}_end_to_end_glb_s"] = time.perf_counter() - t
    report["speed"] = speed
    print("speed (s): " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items() if isinstance(v, float)))
    report["eval_seconds"] = time.perf_counter() - t_all
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
