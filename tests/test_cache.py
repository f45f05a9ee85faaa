"""Step caches (hyvideo.runtime.cache): exactness at threshold 0, determinism, the published decision
rules recomputed independently, skipped steps = input + cached residual, stale shapes, errors,
and identical decisions across sequence-parallel ranks (gloo, 2 processes)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hyvideo.runtime.cache import (
    TEACACHE_HUNYUAN_COEFFICIENTS,
    CacheConfig,
    FirstBlockCache,
    TeaCache,
    make_step_cache,
    rescale_teacache,
)
from hyvideo.text.conditioning import TextConditioning
from hyvideo.pipeline.denoise import call_dit, denoise
from hyvideo.pipeline.scheduler import FlowMatchSchedule
from tests.conftest import ROOT
from tests.dit_utils import random_dit, random_inputs, tiny_config

CONFIG = tiny_config()
STEPS = 8


@pytest.fixture(scope="module")
def dit():
    return random_dit(CONFIG)


def generate(dit, *, steps: int = STEPS, cfg: bool = False, thw=(3, 4, 6), seed: int = 1,
             cache=None, predict=call_dit):
    x, _, states, mask, pooled, _ = random_inputs(CONFIG, batch=2, thw=thw, seed=seed)
    pos = TextConditioning(states[:1], mask[:1], pooled[:1])
    neg = TextConditioning(states[1:], mask[1:], pooled[1:])
    with torch.inference_mode():
        return denoise(dit, x[:1], FlowMatchSchedule.create(steps, 7.0), pos,
                       negative=neg if cfg else None, cfg_scale=4.0 if cfg else 1.0,
                       step_cache=cache, predict=predict)


def with_cache(dit, mode: str, threshold: float, **kw):
    cache = make_step_cache(CacheConfig(mode, threshold))
    return generate(dit, cache=cache, **kw), cache


class Recording:
    """Wraps a cache and keeps every call's image tokens, vec and output (test only)."""

    def __init__(self, cache):
        self.cache, self.calls = cache, []

    def __getattr__(self, name):
        return getattr(self.cache, name)

    def run(self, dit, img, txt, inputs):
        out = self.cache.run(dit, img, txt, inputs)
        self.calls.append({"img": img.clone(), "vec": inputs.vec.clone(), "out": out.clone()})
        return out


def recorded_run(dit, mode: str, threshold: float, **kw):
    """Run a generation; return the recorded calls, the cache, and per step the first double
    block's image output and the number of times the last single block ran."""
    recording = Recording(make_step_cache(CacheConfig(mode, threshold)))
    first_outputs, last_block_runs = [], []
    hooks = [dit.double_blocks[0].register_forward_hook(lambda m, a, out: first_outputs.append(out[0].clone())),
             dit.single_blocks[-1].register_forward_hook(lambda m, a, out: last_block_runs.append(1))]
    try:
        generate(dit, cache=recording, **kw)
    finally:
        for h in hooks:
            h.remove()
    return recording.calls, recording.cache, first_outputs, len(last_block_runs)


# ---- configuration ----------------------------------------------------------------------------

def test_config_defaults_and_validation():
    assert CacheConfig().mode == "none" and not CacheConfig().enabled
    assert CacheConfig("teacache").threshold == 0.15
    assert CacheConfig("first-block").threshold == 0.06
    assert CacheConfig("teacache", 0).threshold == 0.0
    assert make_step_cache(CacheConfig("none")) is None
    assert isinstance(make_step_cache(CacheConfig("teacache", 0.1)), TeaCache)
    assert isinstance(make_step_cache(CacheConfig("first-block", 0.1)), FirstBlockCache)
    with pytest.raises(ValueError, match="unknown cache mode 'fbcache'.*teacache, first-block"):
        CacheConfig("fbcache", 0.1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
            CacheConfig("teacache", bad)
    with pytest.raises(ValueError, match="needs cache mode"):
        TeaCache(CacheConfig("first-block", 0.1))


def test_rescale_is_the_published_polynomial():
    x = 0.0731
    expected = sum(c * x ** (4 - i) for i, c in enumerate(TEACACHE_HUNYUAN_COEFFICIENTS))
    assert rescale_teacache(x) == pytest.approx(expected, rel=1e-12)
    assert rescale_teacache(0.0) == TEACACHE_HUNYUAN_COEFFICIENTS[-1]


# ---- exactness and determinism ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["teacache", "first-block"])
@pytest.mark.parametrize("cfg", [False, True], ids=["distilled", "cfg"])
def test_threshold_zero_is_bit_identical_to_no_cache(dit, mode, cfg):
    expected = generate(dit, cfg=cfg)
    got, cache = with_cache(dit, mode, 0.0, cfg=cfg)
    assert torch.equal(got, expected)
    assert cache.stats.computed == STEPS and cache.stats.skipped == 0
    # the distances were measured (so threshold 0 really was the only reason nothing skipped)
    assert all(d is not None for d in cache.stats.distances[1:-1])


@pytest.mark.parametrize("mode,threshold", [("teacache", 100.0), ("first-block", 1.0)])
def test_two_generations_are_identical_and_independent(dit, mode, threshold):
    cache = make_step_cache(CacheConfig(mode, threshold))
    first = generate(dit, cache=cache)
    stats = copy.deepcopy(cache.stats)
    generate(dit, thw=(3, 4, 8), seed=5, cache=cache)  # another size in between: nothing may leak
    second = generate(dit, cache=cache)
    assert stats.skipped > 0
    assert torch.equal(first, second)
    assert cache.stats == stats
    assert cache._residual is None  # end() freed the cached tensors


# ---- the decision rules, recomputed --------------------------------------------------------------

def modulated_by_hand(dit, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """First double block's modulated image input, from the official 6-chunk img_mod layout."""
    lin = dit.double_blocks[0].img_mod.linear
    shift, scale = F.linear(F.silu(vec), lin.weight, lin.bias).chunk(6, dim=-1)[:2]
    return F.layer_norm(img, img.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


@pytest.mark.parametrize("threshold", [60.0, 150.0])
def test_teacache_follows_the_published_rule(dit, threshold):
    calls, cache, _, block_runs = recorded_run(dit, "teacache", threshold, steps=10)
    decisions, accumulated, previous, residual = [], 0.0, None, None
    for k, call in enumerate(calls):
        current = modulated_by_hand(dit, call["img"], call["vec"])
        if k in (0, len(calls) - 1):
            ran, accumulated = True, 0.0
        else:
            rel = ((current - previous).abs().mean() / previous.abs().mean()).item()
            accumulated += rescale_teacache(rel)
            ran = accumulated >= threshold
            if ran:
                accumulated = 0.0
        previous = current
        decisions.append(ran)
        if ran:
            residual = call["out"] - call["img"]
        else:  # a skipped step returns its input plus the last computed residual, exactly
            assert torch.equal(call["out"], call["img"] + residual)
    assert cache.stats.decisions == decisions
    assert decisions[0] and decisions[-1] and not all(decisions)
    assert block_runs == cache.stats.computed  # skipped steps really ran no block


@pytest.mark.parametrize("threshold", [1.0, 1.3])
def test_first_block_cache_follows_its_rule(dit, threshold):
    calls, cache, first_outputs, block_runs = recorded_run(dit, "first-block", threshold, steps=10)
    assert len(first_outputs) == len(calls)  # the first block runs on every step
    decisions, ref, residual = [], None, None
    for k, (call, first) in enumerate(zip(calls, first_outputs)):
        first_residual = first - call["img"]
        ran = k in (0, len(calls) - 1) or bool(
            ((first_residual - ref).abs().mean() / ref.abs().mean()).item() >= threshold)
        decisions.append(ran)
        if ran:
            ref, residual = first_residual, call["out"] - first
        else:
            assert torch.equal(call["out"], first + residual)
    assert cache.stats.decisions == decisions
    assert decisions[0] and decisions[-1] and not all(decisions)
    assert block_runs == cache.stats.computed


@pytest.mark.parametrize("mode,threshold", [("teacache", 1e9), ("first-block", 1e9)])
def test_first_and_last_steps_always_run(dit, mode, threshold):
    out, cache = with_cache(dit, mode, threshold, cfg=True)
    assert cache.stats.decisions == [True] + [False] * (STEPS - 2) + [True]
    assert cache.stats.skipped_steps == list(range(1, STEPS - 1))
    assert torch.isfinite(out).all()
    assert not torch.equal(out, generate(dit, cfg=True))


# ---- shapes and misuse --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["teacache", "first-block"])
def test_a_new_shape_is_recomputed_not_given_a_stale_residual(dit, mode):
    x, t, states, mask, pooled, guidance = random_inputs(CONFIG, batch=2)
    cache = make_step_cache(CacheConfig(mode, 1e9))
    cache.begin(4)
    with torch.inference_mode():
        for k, rows in enumerate((2, 2, 1)):  # the batch shrinks at step 2
            cache.start_step(k)
            got = dit(x[:rows], t[:rows], states[:rows], mask[:rows], pooled[:rows], guidance[:rows],
                      step_cache=cache)
        expected = dit(x[:1], t[:1], states[:1], mask[:1], pooled[:1], guidance[:1])
    assert cache.stats.decisions == [True, False, True]
    assert torch.equal(got, expected)


def test_misuse_raises_clear_errors(dit):
    x, t, states, mask, pooled, guidance = random_inputs(CONFIG, batch=1)
    cache = make_step_cache(CacheConfig("teacache", 0.1))
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="no generation was started"):
            dit(x, t, states, mask, pooled, guidance, step_cache=cache)
        cache.begin(3)
        cache.start_step(0)
        dit(x, t, states, mask, pooled, guidance, step_cache=cache)
        with pytest.raises(RuntimeError, match="called twice in step 0"):
            dit(x, t, states, mask, pooled, guidance, step_cache=cache)
        with pytest.raises(RuntimeError, match="outside the generation"):
            cache.start_step(3)
    with pytest.raises(ValueError, match="at least one step"):
        cache.begin(0)


# ---- sequence and CFG parallelism: every rank takes the single-process decision --------------------------

SP_RUNS = {"teacache": 60.0, "first-block": 1.0}


def test_parallel_ranks_agree_with_single_process(tmp_path, nproc=4):
    """Ring 2 x CFG 2 (4 processes): both the sequence- and the CFG-parallel sums are needed."""
    pytest.importorskip("yunchang")
    out = tmp_path / "result.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           "--standalone", "tests/cache_worker.py", str(out),
                           *(f"{m}:{t}" for m, t in SP_RUNS.items())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(out)
    single = random_dit(CONFIG)
    for mode, threshold in SP_RUNS.items():
        expected, cache = with_cache(single, mode, threshold, steps=10, cfg=True)
        got = result[f"{mode}:{threshold}"]
        assert len(got["stats"]) == nproc
        for rank_stats in got["stats"]:  # each rank measured the whole batch, as one process
            assert rank_stats["decisions"] == cache.stats.decisions
            assert rank_stats["distances"][1:-1] == pytest.approx(cache.stats.distances[1:-1], rel=1e-5)
        assert 0 < cache.stats.skipped < 8
        assert (got["latents"] - expected).abs().max() <= 1e-4
