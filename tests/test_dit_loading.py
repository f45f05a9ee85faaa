"""Loading the official DiT files: containers, precisions, FP8, and every kind of mismatch."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from hyvideo.dit.fp8 import FP8_DTYPE, FP8Linear, fp8_layer_names
from hyvideo.dit.loader import build_dit, load_dit
from hyvideo.checkpoints.reading import CheckpointError
from tests.dit_utils import random_dit, random_inputs, tiny_config


@pytest.fixture(scope="module")
def model_and_state():
    model = random_dit(tiny_config())
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _out(model, cfg):
    with torch.no_grad():
        return model(*random_inputs(cfg))


@pytest.mark.smoke
@pytest.mark.parametrize("container", ["module", "ema"])
def test_official_pt_container_roundtrip(tmp_path, model_and_state, container):
    model, state = model_and_state
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({container: state, "other": {"lr": torch.tensor(1.0)}}, path)
    loaded = load_dit(path, model.config, dtype=torch.float32, load_key=container)
    torch.testing.assert_close(_out(loaded, model.config), _out(model, model.config), atol=0, rtol=0)


def test_safetensors_and_bf16_cast(tmp_path, model_and_state):
    model, state = model_and_state
    path = tmp_path / "dit.safetensors"
    save_file(state, str(path))
    loaded = load_dit(path, model.config, dtype=torch.bfloat16)
    assert loaded.img_in.proj.weight.dtype == torch.bfloat16
    assert loaded.final_layer.linear.weight.dtype == torch.float32  # as the reference builds it
    out = _out(loaded, model.config)
    # Under the official autocast placement the final linear runs in bf16 (tests/test_precision.py).
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    ref = _out(model, model.config)
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_missing_file(tmp_path, model_and_state):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_dit(tmp_path / "nope.pt", model_and_state[0].config)


def test_wrong_keys_are_listed_with_counts(tmp_path, model_and_state):
    model, state = model_and_state
    bad = dict(state)
    bad.pop("double_blocks.0.img_attn_qkv.weight")
    bad.pop("final_layer.linear.bias")
    bad["double_blocks.0.img_attn.qkv.weight"] = torch.zeros(1)
    torch.save({"module": bad}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_dit(tmp_path / "bad.pt", model.config, dtype=torch.float32)
    msg = str(err.value)
    assert "2 missing keys" in msg and "double_blocks.0.img_attn_qkv.weight" in msg
    assert "1 unexpected keys: double_blocks.0.img_attn.qkv.weight" in msg


def test_wrong_shapes_are_listed(tmp_path, model_and_state):
    model, state = model_and_state
    bad = dict(state)
    bad["vector_in.in_layer.weight"] = torch.zeros(64, 31)
    torch.save({"module": bad}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"1 shape mismatches .*vector_in.in_layer.weight \(64, 31\) != \(64, 32\)"):
        load_dit(tmp_path / "bad.pt", model.config, dtype=torch.float32)


def test_wrong_variant_is_diagnosed(tmp_path, model_and_state):
    model, state = model_and_state
    torch.save({"module": state}, tmp_path / "dit.pt")
    import dataclasses
    with pytest.raises(CheckpointError, match="unexpected keys: guidance_in"):
        load_dit(tmp_path / "dit.pt", dataclasses.replace(model.config, guidance_embed=False))


def test_missing_container_key(tmp_path, model_and_state):
    torch.save({"state": {"a": {"b": torch.zeros(1)}}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="none of the container keys"):
        load_dit(tmp_path / "x.pt", model_and_state[0].config)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/hyvideo_pwned",))


@pytest.mark.smoke
def test_pickle_that_executes_code_is_refused(tmp_path, model_and_state):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"module": _Evil()}, f)
    torch.save({"module": {"x": torch.zeros(1)}, "payload": _Evil()}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(CheckpointError, match="refusing to load|cannot read"):
            load_dit(p, model_and_state[0].config)
    import os
    assert not os.path.exists("/tmp/hyvideo_pwned")


def _quantize(state, model):
    names = fp8_layer_names(model)
    q, scales = dict(state), {}
    for n in names:
        w = state[f"{n}.weight"]
        scale = w.abs().max() / 448
        q[f"{n}.weight"] = (w / scale).to(FP8_DTYPE)
        scales[n] = scale.reshape(())
    return q, scales


def test_fp8_pair_loads_and_dequantises(tmp_path, model_and_state):
    model, state = model_and_state
    q, scales = _quantize(state, model)
    torch.save({"module": q}, tmp_path / "mp_rank_00_model_states_fp8.pt")
    torch.save(scales, tmp_path / "mp_rank_00_model_states_fp8_map.pt")
    loaded = load_dit(tmp_path / "mp_rank_00_model_states_fp8.pt", model.config, dtype=torch.float32)
    layers = [m for m in loaded.modules() if isinstance(m, FP8Linear)]
    assert len(layers) == len(fp8_layer_names(model)) and layers[0].weight.dtype == FP8_DTYPE
    w = layers[0].dequantized_weight(torch.float32)
    assert w.dtype == torch.float32
    ref, out = _out(model, model.config), _out(loaded, model.config)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()  # e4m3 rounding only


def test_fp8_without_map_is_a_clear_error(tmp_path, model_and_state):
    model, state = model_and_state
    q, _ = _quantize(state, model)
    torch.save({"module": q}, tmp_path / "m_fp8.pt")
    with pytest.raises(CheckpointError, match="needs its scale map m_fp8_map.pt"):
        load_dit(tmp_path / "m_fp8.pt", model.config)


def test_fp8_map_mismatch_is_listed(tmp_path, model_and_state):
    model, state = model_and_state
    q, scales = _quantize(state, model)
    scales.pop("single_blocks.1.linear2")
    scales["bogus.layer"] = torch.tensor(1.0)
    torch.save({"module": q}, tmp_path / "m_fp8.pt")
    torch.save(scales, tmp_path / "m_fp8_map.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \['single_blocks.1.linear2'\], 1 unexpected \['bogus.layer'\]"):
        load_dit(tmp_path / "m_fp8.pt", model.config)


def test_meta_build_has_no_storage():
    model = build_dit(tiny_config(mm_double_blocks_depth=20, mm_single_blocks_depth=40), device="meta")
    assert all(p.is_meta for p in model.parameters())
