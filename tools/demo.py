"""`make demo`: prompt -> avatar on a local Kiln server -> headless Blender -> .blend, GLB and MP4.

Starts the server on a free loopback port with its data under the output folder, drives the
Blender extension's batch path through the bpy module (the same functions as
`blender -b --command kiln generate ...`), then stops the server. Everything lands in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPT = "an elderly man with a grey beard, round glasses and a blue hoodie"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the Kiln server exited with code {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=2) as r:
                if json.load(r).get("status") == "ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the Kiln server did not answer on {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    # 1. The server, on loopback, with its data beside the results.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (out / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port), "--data-dir", str(out / "server-data")],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        print(f"kiln demo: server on {url} (log: {out / 'server.log'})", flush=True)
        wait_healthy(url, server)

        # 2. Blender as a module: the extension's batch path, as `blender -b --command kiln` runs it.
        import bpy  # noqa: F401  (the bpy wheel; first import takes a few seconds)

        sys.path.insert(0, str(ROOT))
        from blender_addon import cli

        t0 = time.monotonic()
        code = cli.main(
            [
                "generate",
                "--prompt", args.prompt,
                "--seed", str(args.seed),
                "--out", str(out),
                "--turntable",
                "--frames", str(args.frames),
                "--size", str(args.size),
                "--server", url,
            ]
        )  # fmt: skip
        if code != 0:
            print(f"kiln demo: generation failed (exit {code})", file=sys.stderr)
            return code
        print(f"kiln demo: done in {time.monotonic() - t0:.1f} s; results in {out}:")
        for f in sorted(out.iterdir()):
            if f.is_file() and f.suffix in {".blend", ".glb", ".mp4", ".png", ".json"}:
                print(f"  {f.name}  ({f.stat().st_size / 1e6:.2f} MB)")
        return 0
    finally:
        # 3. Stop the server whatever happened.
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
