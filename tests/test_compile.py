"""Regional torch.compile: same numbers as eager, keys untouched, no recompile per resolution."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from hyvideo import compat
from hyvideo.runtime.compile import compile_blocks, is_compiled, reset_compiled
from tests.dit_utils import random_dit, random_inputs, tiny_config

# (latent T, H, W), text length, valid lengths: three resolutions and prompt lengths.
SHAPES = [((3, 4, 6), 10, (10,)), ((5, 8, 12), 12, (7,)), ((2, 6, 8), 20, (20,))]


@pytest.fixture
def fresh_dynamo():
    reset_compiled()
    counters.clear()
    yield
    reset_compiled()


def test_compiled_blocks_match_eager_without_recompiling(fresh_dynamo):
    cfg = tiny_config()
    eager, compiled = random_dit(cfg), random_dit(cfg)
    keys = list(compiled.state_dict())
    assert compile_blocks(compiled) == cfg.mm_double_blocks_depth + cfg.mm_single_blocks_depth
    assert all(is_compiled(b) for b in [*compiled.double_blocks, *compiled.single_blocks])
    assert list(compiled.state_dict()) == keys  # the official key names stay loadable
    graphs = []
    for thw, text_len, valid in SHAPES:
        inputs = random_inputs(cfg, batch=1, thw=thw, text_len=text_len, valid=valid)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(*inputs), eager(*inputs), atol=1e-4, rtol=1e-4)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0, "nothing was compiled"
    # dynamic shapes: later resolutions and prompt lengths reuse the graphs of the first
    if compat.torch_version() >= compat.DYNAMIC_COMPILE_TORCH:  # older: recompiles, same numbers
        assert graphs[1] == graphs[0] and graphs[2] == graphs[0], graphs


def test_compiled_mixed_length_batch_is_exact(fresh_dynamo):
    cfg = tiny_config()
    eager, compiled = random_dit(cfg), random_dit(cfg)
    compile_blocks(compiled)
    inputs = random_inputs(cfg, batch=2, valid=(7, 3))
    with torch.inference_mode():
        torch.testing.assert_close(compiled(*inputs), eager(*inputs), atol=1e-4, rtol=1e-4)


def test_unknown_compile_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown compile mode"):
        compile_blocks(random_dit(tiny_config()), mode="fastest")
