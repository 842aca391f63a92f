"""Batch generation: ``blender -b --command kiln generate ...`` and the same from a bpy script.

``main(argv)`` returns an exit status (0 ok, 1 a job failed, 2 bad arguments) and never exits
the process, so a script that imports bpy can call it:
``blender_addon.cli.main(["generate", "--prompt", "...", "--out", DIR, "--turntable"])``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import localserver, runtime, turntable
from .client import KilnError
from .jobflow import file_stem_from_text
from .operators import finish_turntable
from .preferences import ClientSettings, client_settings
from .protocol import PRESETS, JobRequest, OutputOptions, kind_info


class CliError(Exception):
    """Bad arguments or input files; the message says what to fix."""


@dataclass
class GeneratedAsset:
    """One finished item of a batch."""

    label: str
    """The prompt, or ``photo <name>``."""
    object_name: str
    """Name of the imported root object in the saved .blend."""
    job_id: str
    seed: int
    glb: Path
    video: Path | None = None
    """The turntable MP4 when ``--turntable`` was given."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: text and photo to 3D assets in Blender")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate assets, import them, optionally render turntables")
    src = gen.add_argument_group("what to generate (at least one)")
    src.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="a prompt (repeat for several); with --photo: what to change, e.g. 'with a red cap'",
    )
    src.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line (# comments)")
    src.add_argument(
        "--photo",
        action="append",
        type=Path,
        default=[],
        help="a face photo (repeatable); each photo is made once per prompt, or once without one",
    )
    gen.add_argument("--out", type=Path, required=True, help="output folder for .glb, .mp4 and the .blend")
    gen.add_argument("--kind", default="avatar", help="engine for prompts: avatar (default), text_to_3d, ...")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--seed", type=int, default=None, help="fixed seed (default: the server picks)")
    gen.add_argument("--preset", choices=PRESETS, default="draft")
    gen.add_argument(
        "--attribute",
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="avatar attribute override, also for photos (repeatable; names and values: GET /v1/info)",
    )
    gen.add_argument(
        "--variation",
        type=float,
        default=None,
        help="avatars: 0 = the mean look of the attributes .. 1 = a full sample (default: the model's)",
    )
    gen.add_argument("--resolution", type=int, default=128, help="marching-cubes grid (64..512)")
    gen.add_argument("--texture-size", type=int, default=1024, help="texture edge (256..4096)")
    gen.add_argument(
        "--rig",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="avatars come in rigged: armature, vertex groups, expression shape keys (default: on)",
    )
    gen.add_argument("--turntable", action="store_true", help="render a turntable MP4 and add it to the VSE")
    gen.add_argument(
        "--expressions",
        action="store_true",
        help="the turntable of a rigged avatar blinks, smiles and opens its jaw",
    )
    gen.add_argument("--frames", type=int, default=48, help="turntable frames")
    gen.add_argument("--size", type=int, default=256, help="turntable edge in pixels")
    gen.add_argument("--samples", type=int, default=8, help="turntable render samples")
    gen.add_argument("--engine", choices=("CYCLES", "EEVEE"), default="CYCLES")
    gen.add_argument("--image-plane", action="store_true", help="also put the video on a plane")
    gen.add_argument("--blend", default="kiln.blend", help="file name of the saved .blend inside --out")
    gen.add_argument("--server", help="server URL (default: the add-on preferences)")
    gen.add_argument(
        "--start-server",
        action="store_true",
        help="start a local Kiln server for this batch and stop it after (command: the add-on's "
        "Local server preference, env KILN_SERVER_PYTHON, the checkout's .venv, or kiln-server)",
    )
    gen.add_argument(
        "--server-data",
        type=Path,
        help="with --start-server: the server's data folder, kept (default: a temporary one, removed)",
    )
    gen.add_argument("--token", help="server token (default: the add-on preferences, then env KILN_TOKEN)")
    gen.add_argument("--timeout", type=float, help="seconds per request")
    gen.add_argument("--poll-interval", type=float, help="seconds between status polls")
    return parser


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = [p.strip() for p in args.prompt if p.strip()]
    if args.prompts_file is not None:
        try:
            lines = Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
        except OSError as ex:
            raise CliError(f"cannot read --prompts-file: {ex}") from None
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return prompts


def parse_attributes(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CliError(f"--attribute {pair!r} must look like NAME=VALUE, e.g. hair_style=bob")
        out[key.strip()] = value.strip()
    return out


def job_sources(
    args: argparse.Namespace,
    prompts: list[str],
    photos: list[Path],
    attributes: dict[str, str],
    output: OutputOptions,
) -> list[tuple[JobRequest, Path | None, str]]:
    """(request, photo or None, label) of each job of the batch.

    Without --photo each prompt is a job of ``--kind``. With --photo the prompts are what to
    change in the photo's avatar ("with a red cap"), as the panel's Changes field: every photo
    is made once per prompt (once without a prompt when there is none). ``--attr`` overrides go
    with every avatar job, photo or prompt.
    """
    sources: list[tuple[JobRequest, Path | None, str]] = []
    if not photos:
        for prompt in prompts:
            request = JobRequest(
                args.kind, prompt, args.negative_prompt, args.seed, args.preset, {}, None, output
            )
            if kind_info(args.kind).reads("attributes"):
                request.attributes = dict(attributes)
                request.variation = args.variation
            if kind_info(args.kind).reads("rig") and not args.rig:
                request.rig = False
            sources.append((request, None, prompt))
        return sources
    for photo in photos:
        for prompt in prompts or [""]:
            request = JobRequest(
                "photo_avatar", prompt, "", args.seed, args.preset, dict(attributes), None, output
            )
            request.variation = args.variation
            request.rig = None if args.rig else False
            label = f"photo {photo.stem}" + (f", {prompt}" if prompt else "")
            sources.append((request, photo, label))
    return sources


def _ensure_registered() -> None:
    """A script that imported this package without enabling the add-on still gets Scene.kiln."""
    if not hasattr(bpy.types.Scene, "kiln"):
        from . import register

        register()


def generate_assets(args: argparse.Namespace, context=None) -> tuple[list[GeneratedAsset], list[str]]:
    """Run the batch described by ``args``; returns (finished assets, error messages).

    Steps:
        1. Read and check the inputs; raise CliError before any job starts.
        2. Submit every prompt/photo at once; as each finishes, download the GLB into --out and
           import it.
        3. On --turntable: render the MP4 into --out and add it to the scene's VSE.
        4. Save the .blend into --out.
    """
    context = context or bpy.context
    _ensure_registered()
    # 1. Inputs.
    prompts = read_prompts(args)
    photos = [Path(p) for p in args.photo]
    if not prompts and not photos:
        raise CliError("nothing to generate: give --prompt, --prompts-file or --photo")
    for photo in photos:
        if not photo.is_file():
            raise CliError(f"--photo {photo} does not exist")
    base = client_settings(context)
    settings = ClientSettings(
        server_url=args.server or base.server_url,
        token=args.token if args.token is not None else (base.token or os.environ.get("KILN_TOKEN", "")),
        timeout=args.timeout or base.timeout,
        poll_interval=args.poll_interval or base.poll_interval,
    )
    # Blender renders the turntable itself: no server-side video.
    output = OutputOptions(resolution=args.resolution, texture_size=args.texture_size, turntable_frames=0)
    attributes = parse_attributes(args.attribute)
    sources = job_sources(args, prompts, photos, attributes, output)
    try:
        for request, _, _ in sources:
            request.validate()
    except ValueError as ex:
        raise CliError(str(ex)) from None
    out = Path(args.out).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise CliError(
            f"cannot use --out {out} as the output folder ({ex}); pick a folder you can write to"
        ) from None
    options = turntable.TurntableOptions(
        frames=args.frames,
        size=args.size,
        samples=args.samples,
        engine=args.engine,
        expressions=args.expressions,
    )

    scene = context.scene
    assets: list[GeneratedAsset] = []
    errors: list[str] = []
    used_stems: set[str] = set()
    # 2. Every job submitted at once (a server with several workers runs them side by side),
    # then followed until each has finished and is imported.
    jobs = []
    for request, photo, label in sources:
        stem = file_stem_from_text(label, default="kiln_asset")
        while stem in used_stems:
            stem += "_"
        used_stems.add(stem)
        item = runtime.new_job_item(scene, request, label)
        item.out_dir = str(out)
        item.rig = args.rig
        spec = runtime.make_spec(item, request, photo, out)
        spec.file_stem = stem
        print(f"kiln: generating {label!r} ({request.kind})", flush=True)
        jobs.append((item.local_id, spec))
    pairs = [(runtime.find_job(local_id)[1], spec) for local_id, spec in jobs]
    finals = runtime.run_many(context, scene, pairs, settings=settings)
    for (_request, _photo, label), (local_id, spec), final in zip(sources, jobs, finals, strict=True):
        item = runtime.find_job(local_id)[1]
        stem = spec.file_stem
        obj = bpy.data.objects.get(item.object_name) if item.object_name else None
        if final.error or obj is None:
            errors.append(f"{label}: {final.error or item.error or 'nothing was imported'}")
            continue
        asset = GeneratedAsset(label, obj.name, item.job_id, item.seed, Path(item.glb_path))
        # 3. Turntable.
        if args.turntable:
            try:
                video = turntable.render_turntable(obj, out / f"{stem}_turntable.mp4", options)
                finish_turntable(context, scene, video, obj.name, args.image_plane, options.frames)
            except (RuntimeError, OSError) as ex:
                errors.append(f"{label}: turntable failed: {ex}")
                continue
            asset.video = video
        assets.append(asset)
        # The seed the server used (it picks one unless --seed is given): --seed N makes it again.
        print(f"kiln: done {label!r} -> {obj.name} ({asset.glb.name}, seed {item.seed})", flush=True)
        # How an avatar job read its request (attributes.json), as the panel shows it.
        used = [
            f"{a.key}={a.value}" + (f" ({a.source})" if a.source else "") for a in item.made_with if a.used
        ]
        if used:
            print(f"kiln:   made with {', '.join(used)}", flush=True)
        for note in item.notes:
            print(f"kiln:   {note.kind.replace('_', ' ')}: {note.text}", flush=True)

    # 4. Save everything, also after partial failure, so finished work is kept.
    if assets:
        blend = out / args.blend
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), check_existing=False)
        print(f"kiln: saved {blend}", flush=True)
    return assets, errors


def start_batch_server(args: argparse.Namespace) -> localserver.LocalServer:
    """``--start-server``: a local server for the batch; ``args.server``/``args.token`` point at it."""
    if args.server:
        raise CliError("give --server or --start-server, not both")
    import tempfile

    data_dir = args.server_data or Path(tempfile.mkdtemp(prefix="kiln-server-"))
    server = localserver.from_preferences(data_dir=data_dir)
    print(f"kiln: starting a local server ({' '.join(server.command)}, data {server.data_dir})", flush=True)
    try:
        st = server.start().wait_ready()
    except BaseException:
        stop_batch_server(server, args)
        raise
    if st.state != localserver.RUNNING:
        stop_batch_server(server, args)
        raise localserver.LocalServerError(st.message)
    print(f"kiln: local server running at {server.url}", flush=True)
    args.server, args.token = server.url, server.token
    return server


def stop_batch_server(server: localserver.LocalServer, args: argparse.Namespace) -> None:
    """Stop it (its workers too); a server that died or did not start shows its log's end."""
    import shutil

    failed = server.poll(check_health=False) != localserver.RUNNING
    server.stop()
    tail = server.log_tail(12)
    if failed and tail:
        print("kiln: the local server's log ends with:\n  " + "\n  ".join(tail), file=sys.stderr, flush=True)
    if args.server_data is None:
        shutil.rmtree(server.data_dir, ignore_errors=True)
    else:
        print(f"kiln: local server stopped (log: {server.log_path})", flush=True)


def generate(args: argparse.Namespace) -> int:
    """The ``generate`` command: 0 when every job finished, 1 when any failed, 2 on bad input."""
    # A script that imported the package registers it here and unregisters at the end: a bpy
    # process that exits with panels still registered does not exit.
    registered_here = not hasattr(bpy.types.Scene, "kiln")
    server = None
    try:
        if args.start_server:
            server = start_batch_server(args)
        assets, errors = generate_assets(args)
    except CliError as ex:
        print(f"kiln: error: {ex}", file=sys.stderr, flush=True)
        return 2
    except KilnError as ex:
        print(f"kiln: error: {ex}", file=sys.stderr, flush=True)
        return 1
    except (OSError, RuntimeError) as ex:  # e.g. the .blend cannot be saved: a message, not a traceback
        print(f"kiln: error: {ex}", file=sys.stderr, flush=True)
        return 1
    except localserver.LocalServerError as ex:
        print(f"kiln: error: {ex}", file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None:  # also on KeyboardInterrupt: no server is left behind
            stop_batch_server(server, args)
        if registered_here and hasattr(bpy.types.Scene, "kiln"):
            from . import unregister

            unregister()
    for message in errors:
        print(f"kiln: error: {message}", file=sys.stderr, flush=True)
    print(f"kiln: {len(assets)} asset(s) finished, {len(errors)} failed", flush=True)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (without the program name) and run the command; never exits the process."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as ex:  # argparse exits on bad arguments and --help
        return int(ex.code or 0)
    if args.command == "generate":
        return generate(args)
    return 2


def cli_command(argv: list[str]) -> int:
    """Entry for ``bpy.utils.register_cli_command("kiln", ...)``."""
    return main(list(argv))
