"""The DiT-side conformance kinds and the DiT manifests, through the project's runner."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys

import pytest
import torch

from hyvideo import compat
from hyvideo.conformance import Case, run_case, run_manifest
from tests.conftest import ROOT, cases_of_kind, conformance_root

KINDS = ("dit", "fp8", "rope", "scheduler", "sampling")


def _params():
    root = conformance_root()
    if not (root / "cases").is_dir():
        return [pytest.param(None, id="no-data")]
    return [pytest.param(p, id=p.name) for k in KINDS for p in cases_of_kind(root, k)]


@pytest.mark.smoke
@pytest.mark.parametrize("case_dir", _params())
def test_case_passes(conformance, case_dir):
    result = run_case(Case.open(case_dir))
    assert result.passed, result.line()


def _backends():
    """Every attention path that can run on this machine (and its accelerator, if any)."""
    params = [("flex", "cpu"), ("auto", "cpu"), ("torch", "cpu")]
    if compat.accelerator_type() is not None:
        device = compat.accelerator_type()
        params += [(b, device) for b in ("sdpa", "flex", "auto")]
        # flash-attn, FlashAttention-3 and sage take fp16/bf16 only: the fp32 goldens are not theirs
        # (tests/test_attention.py checks them against SDPA in bf16 on the GPU)
    no_flex = compat.flex_block_mask_problem()  # flex block masks need torch >= 2.6
    return [pytest.param(b, d, id=f"{b}-{d}",
                         marks=pytest.mark.skipif(b == "flex" and no_flex is not None,
                                                  reason=str(no_flex)))
            for b, d in params]


@pytest.mark.parametrize("attention,device", _backends())
@pytest.mark.parametrize("kind", ["dit", "fp8", "sampling"])
def test_every_attention_path_passes_the_dit_cases(conformance, kind, attention, device):
    """The sdpa default runs in test_case_passes; every other path must pass the same cases (in
    float32 with TF32 off on an accelerator, as the goldens are float32 CPU results)."""
    if attention == "sage":
        pytest.skip("sage quantizes q and k to int8: checked against sdpa in test_attention")
    cases = cases_of_kind(conformance, kind)
    assert cases, f"no {kind} cases"
    with _no_tf32():
        for case_dir in cases:
            result = run_case(Case.open(case_dir), attention=attention, device=device)
            assert result.passed, result.line()


@contextlib.contextmanager
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("name", ["dit_HYVideo-T2-cfgdistill", "dit_HYVideo-T2"])
def test_dit_manifest(conformance, name):
    result = run_manifest(conformance / "manifests" / f"{name}.json")
    assert result.passed, result.line()


def test_manifest_parameter_count(conformance):
    meta = json.loads((conformance / "manifests" / "dit_HYVideo-T2-cfgdistill.json").read_text())
    assert meta["total_parameters"] == 12_821_012_544
    assert run_manifest(conformance / "manifests" / "dit_HYVideo-T2-cfgdistill.json").passed


def test_runner_detects_a_wrong_expected_output(conformance, tmp_path):
    """A case whose expected output is perturbed beyond tolerance must FAIL, and the CLI exit 1."""
    from safetensors.torch import load_file, save_file

    src = cases_of_kind(conformance, "dit")[0]
    dst = tmp_path / "cases" / "broken"
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "tensors.safetensors"))
    tensors["out.x"] = tensors["out.x"] + 1e-2
    save_file(tensors, str(dst / "tensors.safetensors"))
    result = run_case(Case.open(dst))
    assert not result.passed and result.worst > 1
    proc = subprocess.run([sys.executable, "-m", "hyvideo.conformance", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"FAIL dit {src.name} worst=")
    assert lines[-1] == "0 passed, 1 failed"


def test_unknown_kind_is_a_fail(tmp_path):
    case = tmp_path / "c"
    case.mkdir()
    (case / "case.json").write_text(json.dumps({"kind": "no_such_kind", "name": "c", "outputs": []}))
    result = run_case(Case.open(case))
    assert not result.passed and "not implemented" in result.line()


@pytest.mark.smoke
def test_runner_cli_on_scheduler_cases(conformance):
    cases = cases_of_kind(conformance, "scheduler")
    proc = subprocess.run([sys.executable, "-m", "hyvideo.conformance", *map(str, cases)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{len(cases)} passed, 0 failed"


def test_runner_cli_with_nothing_found(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hyvideo.conformance", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "no case.json" in proc.stderr
