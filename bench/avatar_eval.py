"""Evaluate the avatar model on held-out engine avatars: geometry, faithfulness to prompts, speed.

Usage::

    python -m bench.avatar_eval                      # shipped model, 16 held-out avatars
    python -m bench.avatar_eval --n 32 --json out.json --speed-batch 16

Geometry (as in the tri-plane diffusion papers): MMD, COV and 1-NNA with the Chamfer distance
between surface point sets of generated avatars and held-out engine avatars (seeds never used
in training), next to the train-vs-test floor (engine avatars from the training seeds in place
of generated ones) and a mean-tri-plane baseline (the training mean decoded, for every sample).
"generated" uses each held-out avatar's own attributes, so it is paired with the reference set
(1-NNA far below 0.5 means that pairing); "generated_unconditional" uses seeds only.

Faithfulness: a per-attribute logistic-regression classifier trained on engine avatars'
descriptors (sphere-traced depth + colour images from five sides, PCA-reduced) reads the
attributes back from avatars generated for template prompts and for paraphrases (through the
prompt parser); reported against chance (the majority value), against the classifier's accuracy
on held-out engine avatars (its ceiling) and, with ``--planes``, on fitted training tri-planes
(what the representation itself can show). For a model with attribute means, the means alone
(no denoiser) are an ablation column.

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

from bench.avatar_parts import (
    PART_ATTRIBUTES,
    fine_labeller,
    focused_columns,
    has_facial_hair,
    part_reading,
    project_to_surface,
)
from core.avatar.model import WEIGHTS_DIR, AvatarModel
from core.avatar.model.conditioning import condition_from_partial
from core.avatar.model.train import set_identity
from core.avatar.procedural.engine import AvatarField
from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, VOCAB, AvatarAttributes, describe
from core.fields.base import Field

HELD_OUT_BASE = 9000
"""Seed base of held-out avatars (training uses 1000, the classifier 5000)."""
PROMPT_BASE = 9001
"""Seed base of the attributes the evaluation prompts are written from."""
CEILING_BASE = 9003
"""Seed base of the engine avatars that measure the classifier's own accuracy."""
CLASSIFIER_BASE = 5000
TRAIN_BASE = 1000


identity = set_identity
"""Attributes and engine seed of avatar ``i`` of the set ``base``: the training data's own rule."""


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
        c = project_to_surface(field, c[np.abs(field.value(c)) < 0.03], 2)
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


VIEWS = (
    # (name, ray axis, ray sign, (u axis, u range), (v axis, v range), pixels u, pixels v)
    ("face", 1, +1, (0, (-0.12, 0.12)), (2, (-0.12, 0.16)), 48, 56),  # the face, 5 mm pixels
    ("front", 1, +1, (0, (-0.32, 0.32)), (2, (-0.32, 0.32)), 32, 32),
    ("back", 1, -1, (0, (-0.32, 0.32)), (2, (-0.32, 0.32)), 32, 32),
    ("side", 0, +1, (1, (-0.32, 0.32)), (2, (-0.32, 0.32)), 32, 32),
    ("top", 2, -1, (0, (-0.32, 0.32)), (1, (-0.32, 0.32)), 32, 32),
)
"""Orthographic views the classifier reads: depth + colour where the ray hits."""


def ray_images(field: Field, iters: int = 48) -> list[np.ndarray]:
    """Sphere-trace every view of ``VIEWS`` -> [(pixels u * pixels v, 4) depth + RGB] (misses: 1, 0, 0, 0)."""
    half = 0.32
    out = []
    for _, axis, sign, (ua, (u0, u1)), (va, (v0, v1)), nu, nv in VIEWS:
        u = u0 + (np.arange(nu) + 0.5) / nu * (u1 - u0)
        v = v0 + (np.arange(nv) + 0.5) / nv * (v1 - v0)
        uu, vv = (g.reshape(-1) for g in np.meshgrid(u, v, indexing="ij"))
        o = np.zeros((len(uu), 3), np.float32)
        o[:, ua], o[:, va], o[:, axis] = uu, vv, -sign * half
        t = np.zeros(len(uu), np.float32)
        alive = np.ones(len(uu), bool)
        for _ in range(iters):
            p = o.copy()
            p[:, axis] += sign * t
            d = field.value(p[alive])
            t[alive] += np.maximum(0.8 * d, 5e-4)
            done = np.zeros(len(uu), bool)
            done[alive] = (d < 1e-3) | (t[alive] > 2 * half)
            alive &= ~done
            if not alive.any():
                break
        hit = t < 2 * half
        p = o.copy()
        p[:, axis] += sign * t
        img = np.zeros((len(uu), 4), np.float32)
        img[:, 0] = np.where(hit, t / (2 * half), 1.0)
        if hit.any():
            img[hit, 1:] = field.albedo(p[hit])
        out.append(img)
    return out


def descriptor(field: Field) -> np.ndarray:
    """Depth and colour images of the avatar from five sides, flattened (about 10k values)."""
    return np.concatenate([im.reshape(-1) for im in ray_images(field)]).astype(np.float32)


APPLIES = {
    "hair_color": lambda a: a.hair_style != "bald",
    "headwear_color": lambda a: a.headwear != "none",
}
"""Attributes that only show on some avatars; elsewhere their value is not measured or learned."""


def applies(name: str, attrs: AvatarAttributes) -> bool:
    """Whether ``name`` is visible on an avatar with ``attrs`` (a bald head has no hair colour)."""
    rule = APPLIES.get(name)
    return True if rule is None else bool(rule(attrs))


class AttributeClassifier:
    """Per-attribute multinomial logistic regression on principal components of the descriptors.

    The descriptor has ~27k values and the training set hundreds of avatars, so the features
    are standardised and projected on their principal components; for each attribute the
    number of components (colours read best from a few, glasses and eye colour need many) and
    the L2 strength are chosen by 4-fold cross-validation. An attribute that only shows on some
    avatars (``APPLIES``) is learned from those alone. An attribute given ``columns`` is read
    from those descriptor columns alone (standardised, not projected): the part reader's
    ``focused_columns``.
    """

    def __init__(
        self,
        X: np.ndarray,
        attrs: list[AvatarAttributes],
        dims=(32, 96, 320),
        l2s=(1e-3, 1e-2, 1e-1),
        columns: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.columns = columns or {}
        self.mu, self.sd = X.mean(0), X.std(0) + 1e-3
        Z = torch.from_numpy((X - self.mu) / self.sd).double()
        _, _, V = torch.linalg.svd(Z, full_matrices=False)
        self.proj = V[: min(max(dims), len(X) - 1)].T.contiguous()
        F_ = Z @ self.proj
        self.fsd = F_.std(0) + 1e-6
        F_ = (F_ / self.fsd).float()
        Y = np.stack([a.indices() for a in attrs])
        self.heads, self.majority, self.choice = [], [], []
        for a, name in enumerate(ATTRIBUTE_NAMES):
            k = len(VOCAB[name])
            keep = torch.tensor([applies(name, t) for t in attrs])
            Fa, y = F_[keep], torch.from_numpy(Y[:, a])[keep]
            sizes = dims
            if name in self.columns:  # read from these columns alone, standardised, no projection
                Fa = self._own(X[keep.numpy()], name)
                sizes = (Fa.shape[1],)
            folds = torch.arange(len(y)) % 4

            def cv(choice, Fa=Fa, y=y, k=k, folds=folds) -> float:
                d, l2 = choice
                return float(
                    np.mean([
                        (self._fit(Fa[folds != f, :d], y[folds != f], k, l2)(Fa[folds == f, :d]).argmax(1)
                         == y[folds == f]).float().mean()
                        for f in range(4)
                    ])
                )  # fmt: skip

            d, l2 = max(((d, l2) for d in sizes for l2 in l2s), key=cv)
            self.choice.append((d, l2))
            self.heads.append((d, self._fit(Fa[:, :d], y, k, l2)))
            self.majority.append(float(np.bincount(y.numpy(), minlength=k).max() / max(len(y), 1)))

    def _own(self, X: np.ndarray, name: str) -> torch.Tensor:
        cols = self.columns[name]
        return torch.from_numpy((X[:, cols] - self.mu[cols]) / self.sd[cols]).float()

    @staticmethod
    def _fit(F_: torch.Tensor, y: torch.Tensor, k: int, l2: float):
        W = torch.zeros(F_.shape[1], k, requires_grad=True)
        b = torch.zeros(k, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(F_ @ W + b, y) + l2 * W.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        W, b = W.detach(), b.detach()
        return lambda X: X @ W + b

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = torch.from_numpy((X - self.mu) / self.sd).double()
        F_ = ((Z @ self.proj) / self.fsd).float()
        out = []
        for name, (d, head) in zip(ATTRIBUTE_NAMES, self.heads, strict=True):
            Fa = self._own(X, name) if name in self.columns else F_[:, :d]
            out.append(head(Fa).argmax(1).numpy())
        return np.stack(out, 1)

    def accuracy(self, X: np.ndarray, attrs: list[AvatarAttributes]) -> np.ndarray:
        """Per-attribute accuracy on avatars with known ``attrs``, where each attribute applies -> (A,)."""
        pred, Y = self.predict(X), np.stack([a.indices() for a in attrs])
        out = []
        for a, name in enumerate(ATTRIBUTE_NAMES):
            keep = np.array([applies(name, t) for t in attrs])
            out.append(float((pred[keep, a] == Y[keep, a]).mean()) if keep.any() else float("nan"))
        return np.array(out)


# ---------------------------------------------------------------------------------------

FEMININE_PROMPTS = (
    "a young woman with long ginger hair",
    "an elderly lady with grey hair in a bun",
    "a woman wearing a blue beanie and a black hoodie",
    "a girl with curly black hair and green eyes",
    "she has a blonde ponytail and round glasses",
)
"""Prompts about women that never mention facial hair: the prior must not draw any."""
MASCULINE_PROMPTS = (
    "a man with short brown hair",
    "an elderly gentleman with square glasses",
    "a guy in a red cap",
    "a boy with blonde curly hair",
)
"""Prompts about men that leave facial hair open: the prior should still draw some."""


def part_section(model: AvatarModel, args, scale: float, truths, cached) -> dict:
    """Part-by-part read-back (``bench.avatar_parts``) of template and paraphrase prompts against
    the engine's ceiling, and the facial hair of feminine and masculine prompts over many seeds."""
    from core.avatar.vocab.attributes import complete_attributes
    from core.avatar.vocab.prompt import parse_prompt

    rng = np.random.default_rng(1)
    n = args.n_part_classifier
    cls_set = [identity(CLASSIFIER_BASE, i) for i in range(n)]
    X = cached(
        f"parts3_X_{n}", lambda: [part_reading(AvatarField(a, s), rng)["descriptor"] for a, s in cls_set]
    )
    # Each attribute read from its own parts (the reader scored against the targets), and, for
    # comparison with figures before it, from the whole descriptor's principal components.
    focused = {name: focused_columns(name) for name in PART_ATTRIBUTES}
    readers = {
        "focused": AttributeClassifier(X, [a for a, _ in cls_set], dims=(16, 40, 80), columns=focused),
        "whole": AttributeClassifier(X, [a for a, _ in cls_set], dims=(16, 40, 80)),
    }
    clf = readers["focused"]
    ceil_set = [identity(CEILING_BASE, i) for i in range(args.n_ceiling)]
    Xc = cached(
        f"parts3_ceil_{args.n_ceiling}",
        lambda: [part_reading(AvatarField(a, s), rng)["descriptor"] for a, s in ceil_set],
    )
    ceiling = clf.accuracy(Xc, [a for a, _ in ceil_set])
    ceiling_whole = readers["whole"].accuracy(Xc, [a for a, _ in ceil_set])
    fitted = None
    if args.planes is not None:  # what the fitted tri-planes themselves hold
        data = torch.load(args.planes, weights_only=False)
        k = min(args.n_ceiling, len(data["planes"]))
        Xf = np.stack([part_reading(model.field(p.float()), rng)["descriptor"] for p in data["planes"][:k]])
        fitted = clf.accuracy(Xf, [AvatarAttributes.from_indices(r.tolist()) for r in data["attrs"][:k]])
    kinds = ("template", "paraphrase")
    hits: dict[str, list[np.ndarray]] = {
        k: []
        for k in (*kinds, "template_job", "paraphrase_job", "template_job_whole", "paraphrase_job_whole")
    }
    masks: dict[str, list[np.ndarray]] = {k: [] for k in hits}
    # truth -> prediction of every job read-back, per attribute: which values the misses go to.
    confusion: dict[str, dict[str, int]] = {name: {} for name in PART_ATTRIBUTES}
    for kind in kinds:
        for i, truth in enumerate(truths):
            text = describe(truth) if kind == "template" else describe(truth, np.random.default_rng([7, i]))
            parsed = parse_prompt(text).attributes
            p = model.generate(parsed, seed=100 + i, guidance_scale=scale, steps=args.steps)[0]
            want = np.array(truth.indices())
            mask = np.array([n in parsed and applies(n, truth) for n in ATTRIBUTE_NAMES])
            pred = clf.predict(part_reading(model.field(p), rng)["descriptor"][None])[0]
            hits[kind].append(pred == want)
            masks[kind].append(mask)
            # As a job makes it: parts painted, the small parts from the fitted engine head.
            full = model.completed_attributes(parsed, 100 + i, 1)[0]
            job = part_reading(model.field(p, full), rng)["descriptor"][None]
            pred = clf.predict(job)[0]
            hits[f"{kind}_job"].append(pred == want)
            masks[f"{kind}_job"].append(mask)
            hits[f"{kind}_job_whole"].append(readers["whole"].predict(job)[0] == want)
            masks[f"{kind}_job_whole"].append(mask)
            for name in PART_ATTRIBUTES:
                a = ATTRIBUTE_NAMES.index(name)
                if mask[a]:
                    values = VOCAB[name]
                    key = f"{values[want[a]]}->{values[pred[a]]}"
                    confusion[name][key] = confusion[name].get(key, 0) + 1
    out: dict = {"attributes": {}}
    print(
        "part-by-part read-back (bench.avatar_parts), on the attributes each prompt names; ratio = / engine"
    )
    print("  generated = the generator's own field; job = as a job makes it (painted, small parts attached)")
    print(
        f"  {'attribute':15s} {'engine':>7s} {'fitted':>7s} {'template':>9s} {'ratio':>6s} {'paraphrase':>11s} {'ratio':>6s}"
        f" {'job tmpl':>9s} {'ratio':>6s} {'job para':>9s} {'ratio':>6s}"
    )
    for name in PART_ATTRIBUTES:
        a = ATTRIBUTE_NAMES.index(name)
        row = {
            "engine_ceiling": float(ceiling[a]),
            "fitted_planes": None if fitted is None else float(fitted[a]),
        }
        row["engine_ceiling_whole"] = float(ceiling_whole[a])
        for kind in hits:
            h = [x[a] for x, m in zip(hits[kind], masks[kind], strict=True) if m[a]]
            c = ceiling_whole[a] if kind.endswith("_whole") else ceiling[a]
            row[kind] = float(np.mean(h)) if h else None
            row[f"{kind}_n"] = len(h)
            row[f"{kind}_ratio"] = None if not h or not c else row[kind] / float(c)
        row["job_confusion"] = dict(sorted(confusion[name].items()))
        out["attributes"][name] = row
        f = lambda v: "   -" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"  {name:15s} {f(row['engine_ceiling']):>7s} {f(row['fitted_planes']):>7s} {f(row['template']):>9s} {f(row['template_ratio']):>6s}"
            f" {f(row['paraphrase']):>11s} {f(row['paraphrase_ratio']):>6s}"
            f" {f(row['template_job']):>9s} {f(row['template_job_ratio']):>6s}"
            f" {f(row['paraphrase_job']):>9s} {f(row['paraphrase_job_ratio']):>6s}"
        )
        print(
            f"  {'':15s} whole-descriptor reader: engine {f(row['engine_ceiling_whole'])},"
            f" job {f(row['template_job_whole'])} ({f(row['template_job_whole_ratio'])})"
            f" / {f(row['paraphrase_job_whole'])} ({f(row['paraphrase_job_whole_ratio'])})"
        )
        misses = {k: v for k, v in row["job_confusion"].items() if k.split("->")[0] != k.split("->")[1]}
        if misses:
            print(f"  {'':15s} job misses: {', '.join(f'{k} x{v}' for k, v in misses.items())}")

    def facial(prompts: tuple[str, ...], total: int) -> dict:
        per = max(1, total // len(prompts))
        model_hair = engine_hair = 0
        for j, text in enumerate(prompts):
            parsed = parse_prompt(text).attributes
            for k in range(0, per, 16):
                m = min(16, per - k)
                planes = model.generate(
                    parsed, seed=20000 + 1000 * j + k, n=m, guidance_scale=scale, steps=args.steps
                )
                model_hair += sum(
                    has_facial_hair(part_reading(model.field(q), rng, 1500, 200)) for q in planes
                )
            for k in range(per):
                drawn = complete_attributes(parsed, (30000 + 1000 * j + k, 0))
                engine_hair += drawn.beard in ("goatee", "full") or drawn.moustache != "none"
        return {
            "seeds": per * len(prompts),
            "model_with_facial_hair": model_hair,
            "engine_prior_with_facial_hair": engine_hair,
        }

    if args.n_facial:
        out["feminine"] = facial(FEMININE_PROMPTS, args.n_facial)
        out["masculine"] = facial(MASCULINE_PROMPTS, max(len(MASCULINE_PROMPTS), args.n_facial // 2))
        for k in ("feminine", "masculine"):
            v = out[k]
            print(
                f"  {k} prompts: facial hair on {v['model_with_facial_hair']}/{v['seeds']} generated avatars"
                f" (engine prior: {v['engine_prior_with_facial_hair']}/{v['seeds']})"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--n", type=int, default=16, help="held-out avatars for the geometry metrics")
    ap.add_argument("--n-classifier", type=int, default=600, help="engine avatars to train the classifier on")
    ap.add_argument("--n-ceiling", type=int, default=150, help="engine avatars to measure the classifier on")
    ap.add_argument("--n-prompts", type=int, default=48, help="prompts per kind (template, paraphrase)")
    ap.add_argument(
        "--planes",
        type=Path,
        default=None,
        help="a training run's planes.pt: also read back fitted tri-planes",
    )
    ap.add_argument("--points", type=int, default=1024, help="surface points per avatar")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument(
        "--smooth", type=float, default=None, help="blur of sampled planes (default: the model's)"
    )
    ap.add_argument("--variation", type=float, default=None, help="sample variation (default: the model's)")
    ap.add_argument(
        "--surface-smooth", type=float, default=None, help="blur of the whole planes (default: the model's)"
    )
    ap.add_argument("--speed-batch", type=int, default=16, help="batch size of the batch timing (0 = skip)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy CPU)")
    ap.add_argument(
        "--texture-size", type=int, default=1024, help="texture of the timed avatars (job default)"
    )
    ap.add_argument(
        "--n-part-classifier", type=int, default=400, help="engine avatars for the part reader (0 = skip)"
    )
    ap.add_argument(
        "--n-facial", type=int, default=200, help="seeds of feminine prompts checked for facial hair"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--cache", type=Path, default=None, help="folder to keep engine-side results between runs"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from core.avatar.vocab.prompt import parse_prompt

    model = AvatarModel.load(args.weights)
    scale = model.default_guidance if args.guidance is None else args.guidance
    if args.smooth is not None:
        model.meta["default_smooth"] = args.smooth
    if args.variation is not None:
        model.meta["default_variation"] = args.variation
    if args.surface_smooth is not None:
        model.meta["default_surface_smooth"] = args.surface_smooth
    rng = np.random.default_rng(0)
    report: dict = {
        "n": args.n,
        "guidance_scale": scale,
        "ddim_steps": args.steps,
        "smooth": model.default_smooth,
        "variation": model.default_variation,
        "surface_smooth": model.default_surface_smooth,
        "complete_unspecified": model.complete_unspecified,
    }
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
    # Seed only, no attributes: does the model cover the data's spread by itself? (With the
    # held-out avatars' own attributes, "generated" is paired with the reference set, which
    # pushes 1-NNA far below 0.5; this set has no such pairing.)
    free = torch.cat(
        [model.generate({}, seed=1000 + i, guidance_scale=scale, steps=args.steps) for i in range(args.n)]
    )
    report["geometry"]["generated_unconditional"] = set_metrics(
        [surface_points(model.field(p), args.points, rng) for p in free], ref
    )
    if model.normalizer.effects is not None:  # ablation: the attributes' additive mean, no denoiser
        centres = model.normalizer.centre(torch.from_numpy(np.stack([a.indices() for a, _ in held])))
        report["geometry"]["attribute_mean"] = set_metrics(
            [surface_points(model.field(c), args.points, rng) for c in centres], ref
        )
    print("geometry (Chamfer in cm^2; COV higher is better; 1-NNA 0.5 is ideal)")
    for k, v in report["geometry"].items():
        print(f"  {k:22s} MMD {v['MMD_cm2']:.3f}  COV {v['COV']:.2f}  1-NNA {v['1-NNA']:.2f}")

    # 2. Faithfulness.
    cls_set = [identity(CLASSIFIER_BASE, i) for i in range(args.n_classifier)]
    X = cached(f"clf2_X_{args.n_classifier}", lambda: [descriptor(AvatarField(a, s)) for a, s in cls_set])
    clf = AttributeClassifier(X, [a for a, _ in cls_set])
    ceil_set = [identity(CEILING_BASE, i) for i in range(args.n_ceiling)]
    Xc = cached(f"ceil2_X_{args.n_ceiling}", lambda: [descriptor(AvatarField(a, s)) for a, s in ceil_set])
    ceiling = clf.accuracy(Xc, [a for a, _ in ceil_set])
    fitted = None
    if args.planes is not None:  # the tri-plane representation's own ceiling
        data = torch.load(args.planes, weights_only=False)
        k = min(args.n_ceiling, len(data["planes"]))
        Xf = np.stack([descriptor(model.field(p.float())) for p in data["planes"][:k]])
        fitted = clf.accuracy(Xf, [AvatarAttributes.from_indices(r.tolist()) for r in data["attrs"][:k]])
    truths = [identity(PROMPT_BASE, i)[0] for i in range(args.n_prompts)]
    columns: dict[str, list[np.ndarray]] = {}
    masks: dict[str, list[np.ndarray]] = {}
    for kind in ("template", "paraphrase"):
        for i, truth in enumerate(truths):
            text = describe(truth) if kind == "template" else describe(truth, np.random.default_rng([7, i]))
            parsed = parse_prompt(text).attributes
            # Only what the prompt asked for, where it can show.
            mask = np.array([n in parsed and applies(n, truth) for n in ATTRIBUTE_NAMES])
            want = np.array(truth.indices())
            p = model.generate(parsed, seed=100 + i, guidance_scale=scale, steps=args.steps)[0]
            columns.setdefault(kind, []).append(clf.predict(descriptor(model.field(p))[None])[0] == want)
            masks.setdefault(kind, []).append(mask)
            # As a job makes it: parts painted, the small parts from the fitted engine head.
            full = model.completed_attributes(parsed, 100 + i, 1)[0]
            job = descriptor(model.field(p, full))[None]
            columns.setdefault(f"{kind}_job", []).append(clf.predict(job)[0] == want)
            masks.setdefault(f"{kind}_job", []).append(mask)
            if kind == "template" and model.normalizer.effects is not None:
                # Ablation: the attributes' additive mean alone, without the denoiser.
                cond = torch.from_numpy(condition_from_partial(parsed))[None]
                centre = model.normalizer.centre(cond)[0]
                columns.setdefault("attribute_mean", []).append(
                    clf.predict(descriptor(model.field(centre))[None])[0] == want
                )
                masks.setdefault("attribute_mean", []).append(mask)
    report["attributes"] = {}
    print(f"attribute accuracy read back by the classifier ({args.n_prompts} prompts per kind), on the")
    print("attributes each prompt names; chance = always guessing the commonest true value of that subset;")
    print("engine = the classifier on held-out engine avatars (its ceiling); fitted = on fitted tri-planes;")
    print(
        "template, paraphrase = the generator's own field; *_job = as a job makes it (painted, small parts attached)"
    )
    cols = ["template", "paraphrase", "template_job", "paraphrase_job"]
    cols += ["attribute_mean"] if "attribute_mean" in columns else []
    print(
        f"  {'attribute':15s} {'n':>3s} {'chance':>7s} {'engine':>7s} {'fitted':>7s} "
        + " ".join(f"{c:>14s}" for c in cols)
    )
    fmt = lambda v: "   -" if v is None or v != v else f"{v:.2f}"  # noqa: E731
    means = {c: [] for c in cols}
    for a, name in enumerate(ATTRIBUTE_NAMES):
        named = [getattr(t, name) for t, m in zip(truths, masks["template"], strict=True) if m[a]]
        chance = max(named.count(v) for v in set(named)) / len(named) if named else None
        row = {
            "n": len(named),
            "chance": chance,
            "engine_ceiling": float(ceiling[a]),
            "fitted_planes": None if fitted is None else float(fitted[a]),
        }
        for c in cols:
            hits = [h[a] for h, m in zip(columns[c], masks[c], strict=True) if m[a]]
            row[c] = float(np.mean(hits)) if hits else None
            if hits:
                means[c].append(row[c] - chance)
        report["attributes"][name] = row
        print(
            f"  {name:15s} {len(named):3d} {fmt(chance):>7s} {fmt(row['engine_ceiling']):>7s} "
            f"{fmt(row['fitted_planes']):>7s} " + " ".join(f"{fmt(row[c]):>14s}" for c in cols)
        )
    report["mean_gain_over_chance"] = {c: float(np.mean(v)) for c, v in means.items()}
    print(
        "  mean accuracy above chance: "
        + ", ".join(f"{c} {v:+.3f}" for c, v in report["mean_gain_over_chance"].items())
    )

    # 2b. Part by part (models whose decoder labels parts): small parts and facial hair.
    if fine_labeller(model.field(model.normalizer.mean)) is not None and args.n_part_classifier:
        report["parts"] = part_section(model, args, scale, truths, cached)

    # 3. Speed.
    from core.assets import AssetOptions, build_asset

    # The avatar job's defaults, without the video.
    opts = AssetOptions(resolution=128, texture_size=args.texture_size, turntable_frames=0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t, c = time.perf_counter(), cpu_seconds()
        p = model.generate({"hair_style": "bob"}, seed=1, guidance_scale=scale, steps=args.steps)
        t_sample = time.perf_counter() - t
        full = model.completed_attributes({"hair_style": "bob"}, 1, 1)[0]
        field = model.field(p[0], full)  # as a job makes it: painted, small parts attached
        res = build_asset(field, Path(tmp) / "one", opts, name="avatar")
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
            # What `python -m core.pipelines.avatar --n 16` does: one batched DDIM run, then
            # the asset path in one worker process per core.
            from core.pipelines.avatar import AvatarRequest, make_batch

            t = time.perf_counter()
            request = AvatarRequest(n=args.speed_batch, seed=2, guidance_scale=scale, steps=args.steps)
            make_batch(request, Path(tmp) / "batch", opts, model=model)
            speed[f"batch{args.speed_batch}_end_to_end_glb_s"] = time.perf_counter() - t
            speed["batch_workers"] = os.cpu_count()
    report["speed"] = speed
    print("speed (s): " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items() if isinstance(v, float)))
    report["eval_seconds"] = time.perf_counter() - t_all
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
