"""Calibrate the photo reader's facial-hair thresholds on engine avatars, and check them on others.

    python -m bench.photo_calibrate                       # 160 calibration + 80 held-out photos
    python -m bench.photo_calibrate --n-cal 240 --json out.json

Synthetic photos of engine avatars (as ``bench.photo_avatar_eval`` renders them, no hats) are read
once; the lower-face reader's measurements (``LowerFaceFeatures``) are kept, and the thresholds of
its decision rule (``beard_de``, ``beard_full_t``, ``moustache_band``) are chosen by grid search
for the best accuracy on the calibration seeds (``CAL_SEED``). The chosen and the current
thresholds are then scored on held-out seeds (``HELD_OUT_SEED``, those of photo_avatar_eval), with
the majority-class chance beside them. It prints the values to put in ``readings.Thresholds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np

from core.avatar.procedural.engine import AvatarField
from core.avatar.procedural.synthetic_photo import random_lighting, render_photo
from core.avatar.reading import read_photo
from core.avatar.reading.photo import PhotoError
from core.avatar.reading.readings import THRESHOLDS
from core.avatar.vocab.attributes import sample_attributes

CAL_SEED = 3000
HELD_OUT_SEED = 5000


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def collect(seed: int, n: int) -> list[dict]:
    """Lower-face measurements and the true beard and moustache of ``n`` synthetic photos."""
    from bench.photo_avatar_eval import CAMERA

    rows = []
    for i in range(seed, seed + n):
        rng = np.random.default_rng(i)
        attrs = sample_attributes(rng, {"headwear": "none"})
        img = render_photo(AvatarField(attrs, seed=i), random_lighting(rng), CAMERA, rng)
        try:
            reading = read_photo(_png(img))
        except PhotoError:
            continue
        if reading.features is None:
            continue
        f = dataclasses.asdict(reading.features.lower_face)
        rows.append({**f, "beard": attrs.beard, "moustache": attrs.moustache})
    return rows


def beard_rule(r: dict, de: float, full_t: float) -> str | None:
    """The reader's beard decision (core.avatar.reading.lower_face) for given thresholds."""
    chin, jaw = r["chin"], r["jaw"]
    if np.isnan(chin) or np.isnan(jaw):
        return None
    if chin >= de and jaw >= de:
        return "full" if min(r["chin_toward_hair"], r["jaw_toward_hair"]) >= full_t else "stubble"
    if chin >= de:
        return "goatee"
    return "stubble" if jaw >= de else "none"


def moustache_rule(r: dict, band: float) -> str | None:
    return None if np.isnan(r["moustache_band"]) else ("moustache" if r["moustache_band"] >= band else "none")


def accuracy(rows: list[dict], attr: str, rule) -> float:
    said = [(rule(r), r[attr]) for r in rows]
    said = [(a, b) for a, b in said if a is not None]
    return sum(a == b for a, b in said) / max(len(said), 1)


def majority(rows: list[dict], attr: str) -> float:
    values = [r[attr] for r in rows]
    return max(values.count(v) for v in set(values)) / max(len(values), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cal", type=int, default=160)
    ap.add_argument("--n-test", type=int, default=80)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    cal, test = collect(CAL_SEED, args.n_cal), collect(HELD_OUT_SEED, args.n_test)

    grid_de = np.arange(4.0, 40.01, 1.0)
    grid_full = np.arange(0.2, 1.01, 0.05)
    best_de, best_full = max(
        itertools.product(grid_de, grid_full),
        key=lambda p: (accuracy(cal, "beard", lambda r: beard_rule(r, *p)), -abs(p[0] - THRESHOLDS.beard_de)),
    )
    best_band = max(
        np.arange(0.2, 1.01, 0.05),
        key=lambda b: (
            accuracy(cal, "moustache", lambda r: moustache_rule(r, b)),
            -abs(b - THRESHOLDS.moustache_band),
        ),
    )
    now = (THRESHOLDS.beard_de, THRESHOLDS.beard_full_t, THRESHOLDS.moustache_band)
    new = (float(best_de), float(best_full), float(best_band))
    report = {"calibration": len(cal), "held_out": len(test), "current": now, "calibrated": new}
    print(
        f"{len(cal)} calibration photos (seeds {CAL_SEED}..), {len(test)} held-out (seeds {HELD_OUT_SEED}..)"
    )
    print(f"  {'':26s} {'beard':>7s} {'moustache':>10s}")
    for name, (de, full, band) in (("current", now), ("calibrated", new)):
        for split, rows in (("calibration", cal), ("held-out", test)):
            b = accuracy(rows, "beard", lambda r, de=de, full=full: beard_rule(r, de, full))
            m = accuracy(rows, "moustache", lambda r, band=band: moustache_rule(r, band))
            report[f"{name}_{split}"] = {"beard": b, "moustache": m}
            print(f"  {name + ' on ' + split:26s} {b:7.2f} {m:10.2f}")
    for split, rows in (("calibration", cal), ("held-out", test)):
        report[f"majority_{split}"] = {
            "beard": majority(rows, "beard"),
            "moustache": majority(rows, "moustache"),
        }
        print(
            f"  {'majority on ' + split:26s} {majority(rows, 'beard'):7.2f} {majority(rows, 'moustache'):10.2f}"
        )
    print(f"thresholds: beard_de={new[0]:g}, beard_full_t={new[1]:.2f}, moustache_band={new[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
