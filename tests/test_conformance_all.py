"""The README's conformance command on the whole data folder: every case of every kind (image to
video included) and every manifest passes, in one process, as CI runs it."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_every_case_and_manifest_passes(conformance):
    proc = subprocess.run([sys.executable, "-m", "hyvideo.conformance", str(conformance)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, "\n".join(line for line in lines if line.startswith("FAIL"))[-3000:]
    passed, failed = map(int, re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1]).groups())
    kinds = {line.split()[1] for line in lines if line.startswith("PASS")}
    assert failed == 0 and passed == len(lines) - 1
    assert {"dit", "sampling", "vae", "text_encoder_llm", "dit_i2v", "sampling_i2v", "lora_i2v",
            "text_encoder_llava_image", "image_preprocess_i2v", "prompt_template_i2v", "manifest"} <= kinds
