"""One torch floor and one set of pins across pyproject.toml, requirements.txt, CI, Docker and conda.

Docker cannot run here, so the Dockerfile and environment.yml are checked by reading them: their
torch is at or above the declared floor, they install the package at CI's pins
(.ci/constraints.txt) with the demo's extra, and nothing for the tests.
"""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hyvideo import compat
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _floor() -> Version:
    (torch,) = [Requirement(d) for d in PROJECT["dependencies"] if Requirement(d).name == "torch"]
    (spec,) = torch.specifier  # exactly one bound: the floor
    assert spec.operator == ">=", torch
    return Version(spec.version)


def _lines(path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines()
            if line.split("#")[0].strip()]


def _pins(path) -> dict[str, Version]:
    pins = {}
    for line in _lines(path):
        name, version = line.split("==")
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    """Every requirement of the package and its extras (not the extras naming each other)."""
    reqs = [Requirement(d) for d in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(d) for d in extra if Requirement(d).name != PROJECT["name"]]
    return reqs


def test_one_floor_everywhere():
    floor = _floor()
    assert (floor.major, floor.minor) == compat.MIN_TORCH
    torch_lines = [r for r in map(Requirement, _lines(ROOT / "requirements.txt")) if r.name == "torch"]
    assert [str(r.specifier) for r in torch_lines] == [f">={floor}"]


def test_requirements_txt_is_what_pyproject_declares():
    declared = {(canonicalize_name(r.name), str(r.specifier)) for r in _declared()}
    listed = {(canonicalize_name(r.name), str(r.specifier))
              for r in map(Requirement, _lines(ROOT / "requirements.txt"))}
    assert listed == declared


def test_every_extra_is_reachable_and_all_has_no_test_tools():
    extras = PROJECT["optional-dependencies"]
    assert set(extras) == {"parallel", "web", "demo", "test", "all"}
    assert extras["all"] == ["hyvideo[demo,parallel,web]"]
    runtime = [Requirement(d) for name in ("parallel", "web", "demo") for d in extras[name]]
    assert not {"pytest", "diffusers", "playwright"} & {canonicalize_name(r.name) for r in runtime}


@pytest.mark.parametrize("pins", [".ci/constraints.txt", ".ci/constraints-floor.txt"])
def test_ci_pins_satisfy_the_declared_ranges(pins):
    declared = {canonicalize_name(r.name): r for r in _declared()}
    for name, version in _pins(ROOT / pins).items():
        if name in declared:
            assert declared[name].specifier.contains(version, prereleases=True), (name, version)


def test_requires_python_admits_the_python_of_docker_and_conda():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (python,) = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert Requirement(f"python{PROJECT['requires-python']}").specifier.contains(python.split("=")[1] + ".0")


def test_dockerfile_torch_and_pins():
    text = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+pytorch/pytorch:([\d.]+)-", text, re.M)
    assert Version(base) >= _floor()
    assert not re.search(r"pip install[^\n]*\btorch[=<>]", text), "torch comes from the base image"
    assert re.search(r"^COPY \.ci/constraints\.txt (\./)?constraints\.txt$", text, re.M)
    (install,) = re.findall(r"pip install -c constraints\.txt \"\.\[([a-z,]+)\]\"", text)
    assert "demo" in install.split(",") and "test" not in install.split(",")
    assert "pytest" not in text
    # flash-attn only from a wheel named by a build argument, never compiled in the build
    assert re.search(r"^ARG FLASH_ATTN_WHEEL=", text, re.M)
    assert 'pip install --no-deps "$FLASH_ATTN_WHEEL"' in text
    assert not re.search(r"^[^#]*pip install[^\n]*flash[-_]attn", text, re.M)


def test_environment_yml_torch_and_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    (torch,) = [d for d in conda if re.match(r"pytorch[=<>]", d)]
    version = re.match(r"pytorch(?:==?|>=)([\d.]+)", torch).group(1)
    assert Version(version) >= _floor(), torch
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert "-c .ci/constraints.txt" in pip
    (package,) = [line for line in pip if line.startswith("-e .")]
    extras = re.fullmatch(r"-e \.\[([a-z,]+)\]", package).group(1).split(",")
    assert "demo" in extras and "test" not in extras
    pins = _pins(ROOT / ".ci/constraints.txt")
    for line in pip:
        if "==" in line:  # an explicit pin must be CI's
            name, pinned = line.split("==")
            assert pins[canonicalize_name(name)] == Version(pinned), line
