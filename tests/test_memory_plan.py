"""scripts/memory_plan.py at a tiny size: every case and stage, the JSON records' schema, and
peaks that follow from the modes (what the device holds in each)."""

from __future__ import annotations

import json

import pytest

from tests.memory_tools import memory_plan

FIELDS = {"height", "width", "frames", "mode", "fp8", "blocks_on_device", "ulysses", "stage",
          "peak_bytes", "peak_op"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    assert memory_plan.main(["--preset", "tiny", "--sizes", "64x64", "--frames", "9",
                             "--ulysses", "1,2", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_json_records_have_exactly_the_issue_s_fields(records):
    assert records and all(set(r) == FIELDS for r in records)
    for r in records:
        assert (r["height"], r["width"], r["frames"]) == (64, 64, 9)
        assert r["mode"] in ("none", "model", "blocks") and isinstance(r["fp8"], bool)
        assert r["blocks_on_device"] == (2 if r["mode"] == "blocks" else None)
        assert r["ulysses"] in (1, 2) and r["stage"] in ("text", "denoise", "decode", "total")
        assert isinstance(r["peak_bytes"], int) and r["peak_bytes"] > 0 and isinstance(r["peak_op"], str)
    cases = {(r["mode"], r["fp8"], r["ulysses"]) for r in records}
    assert len(cases) == 12 and len(records) == 48  # 3 modes x fp8 or not x 2 degrees, 4 stages


def _peak(records, stage, **case):
    (r,) = [r for r in records if r["stage"] == stage and all(r[k] == v for k, v in case.items())]
    return r["peak_bytes"]


def test_peaks_follow_the_modes(records):
    for fp8 in (False, True):
        case = {"fp8": fp8, "ulysses": 1}
        total = {m: _peak(records, "total", mode=m, **case) for m in ("none", "model", "blocks")}
        assert total["none"] > total["model"] >= total["blocks"]  # less held on the device
        stages = [_peak(records, s, mode="model", **case) for s in ("text", "denoise", "decode")]
        assert total["model"] == max(stages)
    # The FP8 DiT holds fewer bytes than the bf16 one wherever it is on the device.
    assert _peak(records, "denoise", mode="none", fp8=True, ulysses=1) < \
        _peak(records, "denoise", mode="none", fp8=False, ulysses=1)
    # Text encoding and decoding do not depend on the DiT's precision when the DiT is offloaded.
    for stage in ("text", "decode"):
        assert _peak(records, stage, mode="model", fp8=True, ulysses=1) == \
            _peak(records, stage, mode="model", fp8=False, ulysses=1)


def test_the_tracker_counts_a_storage_once_and_frees_it():
    import torch

    with memory_plan.LiveBytes() as live:
        a = torch.empty(1000, dtype=torch.uint8)
        view = a[10:]  # a view adds nothing
        assert live.live["cpu"] == 1000
        b = torch.empty(500, dtype=torch.uint8)
        assert live.peak["cpu"] == 1500
        del a, view
        assert live.live["cpu"] == 500
        live.start_stage()
        assert live.peak["cpu"] == 500 and b.numel() == 500
