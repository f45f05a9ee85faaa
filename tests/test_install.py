"""The built wheel, installed (not editable) into a fresh environment, works outside the checkout.

The wheel is built from a copy of the package (pyproject.toml, README.md, hyvideo/) in an isolated
build, as ``pip install .`` does, and installed with ``--no-deps`` into a virtual environment that
sees this interpreter's packages (torch and the rest are already here; what is tested is the
package itself: its data files, its console commands and that nothing reads the checkout).
Every command runs from an empty folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

SMALL = ["--model", "tiny-random", "--video-size", "64", "96", "--video-length", "9",
         "--infer-steps", "2", "--quiet"]


def _run(cmd: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "hyvideo", src / "hyvideo", ignore=shutil.ignore_patterns("__pycache__"))
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", src, "-w", work / "dist"],
                cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = (work / "dist").glob("hyvideo-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """bin/ of a fresh environment with the wheel installed (the rest seen from this one)."""
    env = tmp_path_factory.mktemp("venv") / "env"
    proc = _run([sys.executable, "-m", "venv", "--system-site-packages", env], cwd=env.parent)
    assert proc.returncode == 0, proc.stderr
    proc = _run([env / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", wheel],
                cwd=env.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env / "bin"


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """An empty working folder: no checkout, no configs/ beside it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_wheel_carries_the_configs_and_the_commands(wheel):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        commands = whl.read(entry_points).decode()
    configs = sorted(p.name for p in (ROOT / "hyvideo" / "configs").glob("*.json"))
    assert configs and all(f"hyvideo/configs/{name}" in names for name in configs)
    assert "hyvideo/__main__.py" in names
    for command, target in project["scripts"].items():
        assert f"{command} = {target}" in commands
    assert not any(n.startswith(("tests/", "scripts/", "comfyui/")) for n in names)


def test_installed_package_is_imported_from_the_environment(venv, elsewhere):
    proc = _run([venv / "python", "-c", "import hyvideo; print(hyvideo.__file__)"], cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(venv.parent), proc.stdout


def test_console_commands_answer(venv, elsewhere):
    from hyvideo import __version__

    version = _run([venv / "hyvideo-sample", "--version"], cwd=elsewhere)
    assert version.returncode == 0 and __version__ in version.stdout, version.stderr
    for cmd in ([venv / "python", "-m", "hyvideo", "--help"], [venv / "hyvideo-sample", "--help"],
                [venv / "hyvideo-web", "--help"], [venv / "hyvideo-conformance", "--help"],
                [venv / "hyvideo-i2v", "--help"]):
        proc = _run(cmd, cwd=elsewhere)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
        assert "usage:" in proc.stdout, cmd


def test_tiny_demo_runs_from_another_folder(venv, elsewhere):
    proc = _run([venv / "hyvideo-sample", *SMALL, "--prompt", "a cat", "--save-path", "out"],
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    videos = list((elsewhere / "out").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0, proc.stderr[-2000:]
