"""Shared fixtures: where the conformance data is, and how its absence is handled.

The data lives outside the project (``../shared/conformance`` beside a developer's checkout).
``HYVIDEO_CONFORMANCE`` points elsewhere; with ``HYVIDEO_REQUIRE_CONFORMANCE=1`` (set by CI) a
missing folder fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a server started by a test; kill it if it does not exit in ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def conformance_root() -> Path:
    return Path(os.environ.get("HYVIDEO_CONFORMANCE", ROOT.parent / "shared" / "conformance"))


@pytest.fixture(scope="session")
def conformance() -> Path:
    root = conformance_root()
    if not (root / "cases").is_dir():
        message = f"conformance data not found at {root} (set HYVIDEO_CONFORMANCE)"
        if os.environ.get("HYVIDEO_REQUIRE_CONFORMANCE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


def cases_of_kind(root: Path, kind: str) -> list[Path]:
    import json

    return sorted(
        p.parent for p in (root / "cases").rglob("case.json")
        if json.loads(p.read_text()).get("kind") == kind
    )


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
