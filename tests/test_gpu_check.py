"""scripts/gpu_check.sh is valid bash and its Python parts run on the CPU at tiny size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_gpu_check_sh_parses():
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, "-n", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "r.md")],
                          capture_output=True, text=True, check=False, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "HYVIDEO_GPU_CHECK_PYTHON": sys.executable})
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "parts.jsonl"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "all", "--tiny", "--device", "cpu",
                           "--compile-backend", "eager", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {p["part"]: p for p in map(json.loads, out.read_text().splitlines())}


def test_every_part_reports(parts):
    assert set(parts) == {"env", "precision", "attention", "fp8", "offload", "compile", "step"}
    assert not [p for p in parts.values() if "error" in p]


def test_the_parts_measure_what_they_say(parts):
    env = parts["env"]
    assert env["auto"]["float32/mixed"] == "sdpa" and env["lse_kernel"]["float32"] == "cpu"
    attention = parts["attention"]["backends"]
    assert attention["sdpa/mixed"]["max_abs_diff_vs_sdpa"] == 0
    assert attention["cudnn/mixed"]["max_abs_diff_vs_sdpa"] == 0  # SDPA with a kernel order
    for dtype, lse in parts["attention"]["sequence_parallel_lse"].items():
        assert lse["lse_rows"] == lse["queries"] and lse["max_abs_diff_vs_sdpa"] < 2e-2, dtype
    for name, layer in parts["fp8"]["layers"].items():
        assert layer["weight_only_err"] < 0.01, name  # bf16 rounding only
        if "fp8_token_err" in layer:
            assert 0.005 < layer["fp8_token_err"] < 0.06, name  # float8 activations
    none = parts["offload"]["modes"]["none"]
    # On the CPU the "measured" peak is the tracker on real tensors: the fake-tensor prediction
    # of the same forward agrees up to the kernels' small scratch tensors.
    assert abs(none["measured_bytes"] - none["predicted_bytes"]) < 0.05 * none["measured_bytes"]
    assert parts["compile"]["max_abs_diff"] == 0
    for block in parts["precision"]["blocks"].values():  # CPU autocast's lists differ from CUDA's
        assert block["dtypes"] == ["torch.bfloat16", "torch.bfloat16"]
        assert block["max_abs_diff"] < 0.05 * block["max_abs"]
    assert set(parts["step"]["sizes"]) == {"544p", "720p"}
