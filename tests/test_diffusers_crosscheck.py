"""Cross-check against diffusers' independent HunyuanVideo transformer on the same weights.

This runs without the conformance data, so a user's fresh clone still checks the numbers.
"""

from __future__ import annotations

import pytest
import torch

from hyvideo.checkpoints.keys import dit_from_diffusers, dit_to_diffusers
from hyvideo.dit.config import dit_config_to_diffusers
from tests.dit_utils import random_dit, random_inputs, tiny_config

diffusers = pytest.importorskip("diffusers")


def _diffusers_model(cfg, state):
    model = diffusers.HunyuanVideoTransformer3DModel(**dit_config_to_diffusers(cfg))
    model.load_state_dict(dit_to_diffusers(state), strict=True)
    return model.eval()


@pytest.mark.parametrize("cfg,batch,valid,thw", [
    (tiny_config(), 2, (7, 3), (3, 4, 6)),
    (tiny_config(guidance_embed=False, heads_num=2, rope_dim_list=(8, 12, 12)), 1, (10,), (2, 6, 4)),
    (tiny_config(mm_double_blocks_depth=1, mm_single_blocks_depth=3), 3, (10, 1, 5), (1, 2, 2)),
])
def test_same_output_as_diffusers(cfg, batch, valid, thw):
    ours = random_dit(cfg)
    theirs = _diffusers_model(cfg, ours.state_dict())
    x, t, states, mask, pooled, guidance = random_inputs(cfg, batch=batch, valid=valid, thw=thw)
    with torch.no_grad():
        a = ours(x, t, states, mask, pooled, guidance)
        b = theirs(x, t, states, mask, pooled, guidance=guidance).sample
    scale = b.abs().max()
    assert (a - b).abs().max() <= 1e-5 * max(1.0, float(scale)), (a - b).abs().max()


def test_conversion_roundtrip_is_exact():
    state = random_dit(tiny_config()).state_dict()
    back = dit_from_diffusers(dit_to_diffusers(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_unknown_diffusers_key_is_an_error():
    d = dit_to_diffusers(random_dit(tiny_config()).state_dict())
    d["transformer_blocks.0.attn.surprise.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="no conversion rule"):
        dit_from_diffusers(d)
