"""Benchmark the asset path: seconds per step, peak memory and faces for 256^3 fields.

Usage: python bench/assets.py [--resolution 256] [--texture-size 1024] [--max-faces 50000]
                              [--shapes sphere knot] [--frames 36] [--cancel-latency]

Each shape runs in a fresh child process so that its peak RSS is its own. The "path"
column is extract + cleanup + unwrap + bake + export (the target is < 10 s at 256^3 with a
1024^2 texture); the turntable is timed on its own. Wall seconds are printed first, then
CPU seconds (this process plus its xatlas and ffmpeg children), which stay meaningful when
other jobs share the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_field(shape: str):
    from core.fields.analytic import SphereField, TorusKnotField

    return {"sphere": SphereField(0.5, (0.0, 0.0, 0.5)), "knot": TorusKnotField()}[shape]


def run_shape(shape: str, args: argparse.Namespace, queue) -> None:
    from core.assets.cleanup import clean_mesh
    from core.assets.gltf import write_glb
    from core.assets.mesh import extract_mesh
    from core.assets.texture import bake, unwrap
    from core.assets.turntable import render_turntable

    field = make_field(shape)
    row: dict = {"shape": shape}
    cpu: dict = {}

    def cpu_now() -> float:
        # This process and its finished children (the xatlas child, ffmpeg).
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    class step:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> None:
            self.t, self.c = time.perf_counter(), cpu_now()

        def __exit__(self, *exc) -> None:
            row[self.name] = time.perf_counter() - self.t
            cpu[self.name] = cpu_now() - self.c

    with step("extract"):
        mesh = extract_mesh(field, args.resolution)
    row["mc_faces"] = mesh.num_faces
    with step("cleanup"):
        mesh, report = clean_mesh(mesh, max_faces=args.max_faces)
    with step("unwrap"):
        layout = unwrap(mesh, args.texture_size)
    with step("bake"):
        textured = bake(field, mesh, layout, args.texture_size)
    with tempfile.TemporaryDirectory() as tmp:
        with step("export"):
            write_glb(textured, Path(tmp) / "asset.glb")
        with step("turntable"):
            if args.frames:
                render_turntable(
                    textured, Path(tmp) / "t.mp4", Path(tmp) / "p.png", frames=args.frames, size=256
                )
    row["faces"] = textured.num_faces
    row["vertices"] = textured.num_vertices
    row["charts"] = layout.charts
    row["watertight"] = report.watertight
    path_steps = ["extract", "cleanup", "unwrap", "bake", "export"]
    row["path"] = sum(row[k] for k in path_steps)
    cpu["path"] = sum(cpu[k] for k in path_steps)
    row["cpu"] = cpu
    row["load"] = os.getloadavg()[0]
    # ru_maxrss is KiB on Linux; the xatlas child is counted in RUSAGE_CHILDREN.
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["child_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    queue.put(row)


def cancel_latency(args: argparse.Namespace) -> None:
    """Seconds from a cancel request to Cancelled being raised, per stage of build_asset."""
    from core.assets.pipeline import AssetOptions, build_asset
    from core.progress import Cancelled, Reporter

    field = make_field("knot")
    options = AssetOptions(
        resolution=args.resolution, texture_size=args.texture_size, max_faces=args.max_faces
    )
    for stage in ["extract", "cleanup", "unwrap", "bake", "turntable"]:
        flag = threading.Event()
        asked: dict[str, float] = {}

        def on_event(event, stage=stage, flag=flag, asked=asked) -> None:
            if event.stage == stage and not flag.is_set():
                # Ask to stop 0.3 s into the stage, from another thread, as a server would.
                def fire() -> None:
                    asked["t"] = time.perf_counter()
                    flag.set()

                threading.Timer(0.3, fire).start()

        with tempfile.TemporaryDirectory() as tmp:
            try:
                build_asset(field, tmp, options, Reporter(callback=on_event, cancel=flag.is_set))
                print(f"  {stage:10s} finished before the cancel landed")
            except Cancelled:
                print(f"  {stage:10s} stopped {time.perf_counter() - asked['t']:.3f} s after the request")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--max-faces", type=int, default=50_000)
    parser.add_argument("--shapes", nargs="+", default=["sphere", "knot"])
    parser.add_argument("--frames", type=int, default=36, help="turntable frames (0 skips it)")
    parser.add_argument("--cancel-latency", action="store_true")
    args = parser.parse_args()

    print(
        f"asset path: {args.resolution}^3 grid, {args.texture_size}^2 texture, "
        f"max_faces={args.max_faces}, turntable {args.frames} x 256^2"
    )
    cols = ["extract", "cleanup", "unwrap", "bake", "export", "path", "turntable"]
    print(
        f"{'shape':8s}" + "".join(f"{c:>10s}" for c in cols) + f"{'MC faces':>10s}{'faces':>8s}{'charts':>8s}"
        f"{'peak MB':>9s}{'xatlas MB':>10s}"
    )
    ctx = multiprocessing.get_context("fork")
    for shape in args.shapes:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_shape, args=(shape, args, queue))
        proc.start()
        # A child that raises never puts its row: stop with its exit code instead of waiting forever.
        while True:
            try:
                row = queue.get(timeout=1.0)
                break
            except Empty:
                if not proc.is_alive():
                    raise SystemExit(
                        f"{shape}: the benchmark process died (exit code {proc.exitcode}); its error is above"
                    ) from None
        proc.join()
        print(
            f"{shape:8s}"
            + "".join(f"{row[c]:10.2f}" for c in cols)
            + f"{row['mc_faces']:10d}{row['faces']:8d}{row['charts']:8d}{row['peak_mb']:9.0f}{row['child_peak_mb']:10.0f}"
        )
        print(
            f"{'  cpu s':8s}"
            + "".join(f"{row['cpu'][c]:10.2f}" for c in cols)
            + f"   (load avg {row['load']:.1f})"
        )
    if args.cancel_latency:
        print("cancellation latency (knot):")
        cancel_latency(args)


if __name__ == "__main__":
    main()
