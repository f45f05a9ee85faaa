"""Conformance cases: reading them, comparing outputs, and the table of kinds.

A case is a folder with ``case.json`` (see ``FORMAT.md`` of the conformance data). Each kind has
a runner ``run(case) -> dict[name, tensor]`` that computes the case's outputs with the project's
own loaders and modules. The comparison is the same for every kind: the worst elementwise ratio
``|got - expected| / (atol + rtol*|expected|)``; a case passes when that ratio is <= 1.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

# kind -> "module:function". Modules are imported only when a case of that kind is run, so one
# kind's missing dependency never stops the others.
RUNNERS: dict[str, str] = {
    "dit": "hyvideo.conformance.dit_kinds:run_dit",
    "fp8": "hyvideo.conformance.dit_kinds:run_fp8",
    "rope": "hyvideo.conformance.dit_kinds:run_rope",
    "scheduler": "hyvideo.conformance.dit_kinds:run_scheduler",
    "sampling": "hyvideo.conformance.dit_kinds:run_sampling",
    "vae": "hyvideo.conformance.vae_kinds:run_vae",
    "text_encoder_llm": "hyvideo.conformance.text_kinds:run_text_encoder_llm",
    "text_encoder_clip": "hyvideo.conformance.text_kinds:run_text_encoder_clip",
    "prompt_template": "hyvideo.conformance.text_kinds:run_prompt_template",
    "text_encoder_llava_image": "hyvideo.conformance.i2v_text_kinds:run_text_encoder_llava_image",
    "prompt_template_i2v": "hyvideo.conformance.i2v_text_kinds:run_prompt_template_i2v",
    "image_preprocess_i2v": "hyvideo.conformance.i2v_text_kinds:run_image_preprocess_i2v",
    "dit_i2v": "hyvideo.conformance.i2v_dit_kinds:run_dit_i2v",
    "sampling_i2v": "hyvideo.conformance.i2v_dit_kinds:run_sampling_i2v",
    "lora_i2v": "hyvideo.conformance.i2v_dit_kinds:run_lora_i2v",
}

# manifest file name prefix -> "module:function" returning a list of problems (empty = pass).
MANIFEST_CHECKERS: dict[str, str] = {
    # before "dit_": the first matching prefix wins
    "dit_HYVideo-I2V-": "hyvideo.conformance.i2v_dit_kinds:check_i2v_dit_manifest",
    "dit_": "hyvideo.conformance.dit_kinds:check_dit_manifest",
    "vae_": "hyvideo.conformance.vae_kinds:check_vae_manifest",
    # before "text_encoder_": the first matching prefix wins
    "text_encoder_i2v_": "hyvideo.conformance.i2v_text_kinds:check_llava_manifest",
    "text_encoder_": "hyvideo.conformance.text_kinds:check_text_encoder_manifest",
}


class CaseError(ValueError):
    """A case or manifest that cannot be used as it is (the message says why, in one line)."""


def read_json_object(file: Path) -> dict[str, Any]:
    """A JSON object from ``file``, or CaseError saying what is wrong with it."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        text = exc.doc.strip()
        cut = "; the file looks cut off" if text[:1] in "{[" and not text.endswith(("}", "]")) else ""
        raise CaseError(f"{file.name} is not valid JSON ({exc.msg}, line {exc.lineno} column "
                        f"{exc.colno}){cut}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read {file.name}: {getattr(exc, 'strerror', None) or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise CaseError(f"{file.name} is not valid JSON: {exc or 'nested too deeply'}") from None
    if not isinstance(data, dict):
        raise CaseError(f"{file.name} holds a JSON {type(data).__name__}, expected an object")
    return data


@dataclass
class Case:
    """One case folder; tensors are read on first use."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Case:
        """Read ``case.json``; CaseError when it is unreadable or lacks what every case has."""
        path = Path(path)
        meta = read_json_object(path / "case.json")
        if not isinstance(meta.get("kind"), str) or not meta["kind"]:
            raise CaseError(f"case.json has no 'kind' (one of: {', '.join(sorted(RUNNERS))})")
        outputs = meta.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise CaseError(f"case.json: 'outputs' must be a list of tensor names, got {outputs!r:.60}")
        tolerance = meta.get("tolerance", {})
        if not isinstance(tolerance, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in tolerance.values()):
            raise CaseError(f"case.json: 'tolerance' must map atol/rtol to finite numbers >= 0, "
                            f"got {tolerance!r:.60}")
        return cls(path, meta)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta.get("settings", {})

    @property
    def outputs(self) -> list[str]:
        return list(self.meta.get("outputs", []))

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        file = self.path / "tensors.safetensors"
        return load_file(str(file)) if file.exists() else {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors


def worst_ratio(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> float:
    """max |got - expected| / (atol + rtol*|expected|); inf on a shape mismatch or non-finite."""
    if tuple(got.shape) != tuple(expected.shape):
        return math.inf
    if not expected.is_floating_point() and not got.is_floating_point():
        if atol == 0 and rtol == 0:
            return 0.0 if torch.equal(got.long(), expected.long()) else math.inf
    got64 = got.detach().to(torch.float64).cpu()
    exp64 = expected.detach().to(torch.float64).cpu()
    if got64.numel() == 0:
        return 0.0
    diff = (got64 - exp64).abs()
    denom = atol + rtol * exp64.abs()
    if atol == 0 and rtol == 0:
        return 0.0 if bool((diff == 0).all()) else math.inf
    ratio = torch.where(torch.isfinite(diff), diff / denom, torch.full_like(diff, math.inf))
    return float(ratio.max())


@dataclass
class Result:
    kind: str
    name: str
    worst: float
    detail: str = ""
    per_output: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.worst <= 1.0 and not self.detail.startswith("error")

    def line(self) -> str:
        """``PASS|FAIL <kind> <name> worst=<ratio> (<detail>)``, always one line."""
        status = "PASS" if self.passed else "FAIL"
        text = f"{status} {_one_line(self.kind)} {_one_line(self.name)} worst={self.worst:.4g}"
        return f"{text} ({_one_line(self.detail, 300)})" if self.detail else text


def _one_line(text: Any, limit: int = 120) -> str:
    """``text`` with its whitespace runs (newlines included) as one space, shortened to ``limit``."""
    flat = " ".join(str(text).split()) or "?"
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _resolve(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def run_case(case: Case, **options: Any) -> Result:
    """Run one case through its kind's runner and compare every listed output.

    ``options`` (e.g. ``attention="flex"``, ``device="cuda"``) reach the runners that take
    them (the DiT kinds); the others ignore them.
    """
    spec = RUNNERS.get(case.kind)
    if spec is None:
        return Result(case.kind, case.name, math.inf, f"error: kind {case.kind!r} not implemented "
                      f"(known: {', '.join(sorted(RUNNERS))})")
    try:
        runner = _resolve(spec)
        accepted = inspect.signature(runner).parameters
        got = runner(case, **{k: v for k, v in options.items() if k in accepted})
        got = {name: t.cpu() if isinstance(t, torch.Tensor) else t for name, t in got.items()}
    except Exception as exc:  # a runner failure is a FAIL line, not a crash of the whole run
        return Result(case.kind, case.name, math.inf, f"error: {type(exc).__name__}: {exc}")
    tol = case.meta.get("tolerance", {})
    atol, rtol = float(tol.get("atol", 0)), float(tol.get("rtol", 0))
    per: dict[str, float] = {}
    try:
        for name in case.outputs:
            if name in got and name not in case:
                raise CaseError(f"expected output {name!r} is not in tensors.safetensors")
            per[name] = math.inf if name not in got else worst_ratio(got[name], case[name], atol, rtol)
    except Exception as exc:  # noqa: BLE001 (a missing or unreadable expected tensor fails this case only)
        return Result(case.kind, case.name, math.inf, f"error: {type(exc).__name__}: {exc}")
    worst = max(per.values(), default=math.inf)
    bad = [n for n, w in per.items() if not w <= 1.0]
    detail = f"worst outputs: {', '.join(bad[:4])}" if bad else ""
    return Result(case.kind, case.name, worst, detail, per)


def run_manifest(path: Path) -> Result:
    """Check a full-size model built on the meta device against a manifest."""
    name = path.stem
    try:
        meta = read_json_object(path)
    except CaseError as exc:
        return Result("manifest", name, math.inf, f"error: {exc}")
    spec = next((v for k, v in MANIFEST_CHECKERS.items() if name.startswith(k)), None)
    if spec is None:
        return Result("manifest", name, math.inf, "error: no checker for this manifest")
    try:
        problems = _resolve(spec)(meta)
    except Exception as exc:
        return Result("manifest", name, math.inf, f"error: {type(exc).__name__}: {exc}")
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return Result("manifest", name, math.inf, "; ".join(problems[:3]) + more)
    return Result("manifest", name, 0.0)


def open_case(path: Path) -> Case | Result:
    """The case at ``path``, or a FAIL result naming it and what is wrong with its case.json."""
    try:
        return Case.open(path)
    except CaseError as exc:
        return Result("case", path.name, math.inf, f"error: {exc}")


def discover(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Every case folder (with ``case.json``) and manifest (``manifests/*.json``) under paths."""
    cases: set[Path] = set()
    manifests: set[Path] = set()
    for root in map(Path, paths):
        if root.is_file() and root.name == "case.json":
            cases.add(root.parent.resolve())
        elif root.is_file() and root.suffix == ".json" and root.parent.name == "manifests":
            manifests.add(root.resolve())
        elif root.is_dir():
            cases.update(p.parent.resolve() for p in root.rglob("case.json"))
            manifests.update(
                p.resolve() for p in root.rglob("*.json") if p.parent.name == "manifests"
            )
    return sorted(cases), sorted(manifests)
