"""Build an asset from a built-in analytic field: ``python -m core.assets --shape knot --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.assets.mesh import AssetError
from core.assets.pipeline import AssetOptions, build_asset
from core.fields.analytic import BoxField, SphereField, TorusKnotField, TwoToneSphereField
from core.progress import ProgressEvent, Reporter

SHAPES = {
    "sphere": SphereField,
    "twotone": TwoToneSphereField,
    "box": BoxField,
    "knot": TorusKnotField,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.assets", description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="knot", help="analytic field to build")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder for asset.glb, turntable.mp4, preview.png"
    )
    parser.add_argument("--resolution", type=int, default=AssetOptions.resolution)
    parser.add_argument("--max-faces", type=int, default=AssetOptions.max_faces)
    parser.add_argument("--texture-size", type=int, default=AssetOptions.texture_size)
    parser.add_argument("--frames", type=int, default=AssetOptions.turntable_frames)
    parser.add_argument("--size", type=int, default=AssetOptions.turntable_size, help="turntable frame size")
    parser.add_argument("--vertex-colors", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args(argv)

    def show(event: ProgressEvent) -> None:
        print(f"[{event.fraction * 100:5.1f}%] {event.stage}: {event.message}", file=sys.stderr)

    options = AssetOptions(
        resolution=args.resolution,
        max_faces=args.max_faces,
        texture_size=args.texture_size,
        turntable_frames=args.frames,
        turntable_size=args.size,
        vertex_colors=args.vertex_colors,
    )
    reporter = Reporter(callback=None if args.quiet else show, min_interval=0.5)
    try:
        result = build_asset(SHAPES[args.shape](), args.out, options, reporter, name=args.shape)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "glb": str(result.glb),
                "video": str(result.video) if result.video else None,
                "preview": str(result.preview),
                "stats": result.stats,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
