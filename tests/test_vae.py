"""The causal 3D VAE: conformance, manifest, causality, tiling, slicing, geometry and loading."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from hyvideo.conformance import Case, run_case, run_manifest
from hyvideo.conformance.vae_kinds import case_tiling
from hyvideo.checkpoints.reading import CheckpointError
from hyvideo.vae import TilingConfig, VAEConfig, build_vae, load_vae
from hyvideo.vae.tiling import TilePlan, spatial_tiled, temporal_tiled
from tests.conftest import cases_of_kind, conformance_root

TINY = {"block_out_channels": [4, 8, 8, 8], "layers_per_block": 1, "latent_channels": 16,
        "norm_num_groups": 2, "sample_size": 32, "sample_tsize": 16,
        "_class_name": "AutoencoderKLCausal3D"}


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is as fast, and immune to a busy machine's
    OpenMP contention (which made 2-thread runs 5-10x slower in our measurements)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vae(**overrides) -> nn.Module:
    return build_vae({**TINY, **overrides}, device="cpu")


def _case_params():
    root = conformance_root()
    if not (root / "cases").is_dir():
        return [pytest.param(None, id="no-data")]
    return [pytest.param(p, id=p.name) for p in cases_of_kind(root, "vae")]


# ---- conformance ------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize("case_dir", _case_params())
def test_conformance_case(conformance, case_dir):
    result = run_case(Case.open(case_dir))
    assert result.passed, result.line()


def test_manifest(conformance):
    result = run_manifest(conformance / "manifests" / "vae_884-16c-hy.json")
    assert result.passed, result.line()
    meta = json.loads((conformance / "manifests" / "vae_884-16c-hy.json").read_text())
    assert meta["total_parameters"] == 246_478_803 and len(meta["keys"]) == 248


def test_fewer_width_changes_give_244_keys():
    assert len(build_vae({**TINY, "block_out_channels": [8, 16, 16, 16],
                          "layers_per_block": 2}).state_dict()) == 244


def _tile_shapes(vae, run) -> dict[str, list[list[int]]]:
    """Run ``run()`` and record the input shape of every encoder/decoder call (one per tile)."""
    log: dict[str, list[list[int]]] = {"encoder": [], "decoder": []}
    hooks = [getattr(vae, n).register_forward_pre_hook(
        lambda m, args, n=n: log[n].append(list(args[0].shape))) for n in log]
    try:
        log["result"] = run()
    finally:
        for h in hooks:
            h.remove()
    return log


@pytest.mark.parametrize("case_dir", _case_params())
def test_tiles_match_reference_tile_log(conformance, case_dir):
    """Our tiler runs exactly the tiles the reference ran (settings.tile_log)."""
    case = Case.open(case_dir)
    vae = load_vae(case.path / "config.json", weights=case.path / "weights.safetensors",
                   dtype=torch.float32)
    tiling = case_tiling(case, vae)
    with torch.inference_mode():
        enc = _tile_shapes(vae, lambda: vae.encode(case["video"], tiling=tiling))
        dec = _tile_shapes(vae, lambda: vae.decode(case["latents"], tiling=tiling))
    assert enc["encoder"] == case.settings["tile_log"]["tiled_encode"]["encoder"]
    assert dec["decoder"] == case.settings["tile_log"]["tiled_decode"]["decoder"]


@pytest.mark.parametrize("shape, tiling, counts", [
    # FORMAT.md's hidden geometries: (temporal x spatial) tiles for encode and decode.
    ((2, 3, 17, 48, 48), TilingConfig(32, 16, 0.5), (3 * 9, 3 * 9)),
    ((1, 3, 41, 48, 72), TilingConfig(64, 32, 0.375), (3 * 4, 3 * 4)),
])
def test_hidden_case_tile_counts(shape, tiling, counts):
    vae = tiny_vae()
    x = torch.rand(shape) * 2 - 1
    with torch.inference_mode():
        enc = _tile_shapes(vae, lambda: vae.encode(x, tiling=tiling))
        z = torch.randn(shape[0], 16, *vae.latent_shape(*shape[2:]))
        dec = _tile_shapes(vae, lambda: vae.decode(z, tiling=tiling))
    assert enc["result"].mean.shape == z.shape and dec["result"].shape == x.shape
    assert (len(enc["encoder"]), len(dec["decoder"])) == counts


# ---- causality --------------------------------------------------------------------------------
def _framewise_group_norm(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * t, c, h, w)
    out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
    return out.reshape(b, t, c, h, w).transpose(1, 2)


@pytest.fixture
def framewise_norm(monkeypatch):
    """GroupNorm over each frame separately: the only non-causal op of the reference (its
    GroupNorm statistics span all frames) made causal, so the rest can be tested exactly."""
    monkeypatch.setattr(nn.GroupNorm, "forward", _framewise_group_norm)


@pytest.mark.smoke
def test_encoder_is_causal(framewise_norm):
    vae = tiny_vae()
    x = torch.rand(1, 3, 13, 16, 16) * 2 - 1
    with torch.inference_mode():
        base = vae.encode(x).mean
        for frame in (1, 4, 5, 9, 12):
            changed = x.clone()
            changed[:, :, frame] = torch.rand_like(changed[:, :, frame])
            mean = vae.encode(changed).mean
            kept = (frame + 3) // 4  # latent k sees pixel frames <= 4k
            assert torch.equal(mean[:, :, :kept], base[:, :, :kept]), frame
            assert not torch.equal(mean[:, :, kept], base[:, :, kept]), frame


def test_decoder_is_causal(framewise_norm):
    vae = tiny_vae()
    z = torch.randn(1, 16, 4, 2, 2)
    with torch.inference_mode():
        base = vae.decode(z)
        for k in (1, 2, 3):
            changed = z.clone()
            changed[:, :, k] += 1.0
            out = vae.decode(changed)
            first = 4 * k - 3  # latent k decodes to pixel frames 4k-3..4k
            assert torch.equal(out[:, :, :first], base[:, :, :first]), k
            assert not torch.equal(out[:, :, first], base[:, :, first]), k


def test_reference_group_norm_spans_time():
    """Documented quirk: with the reference's GroupNorm a later frame shifts earlier latents
    (slightly), so the real model is causal only up to normalisation statistics."""
    vae = tiny_vae()
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    changed = x.clone()
    changed[:, :, 8] = 1.0
    with torch.inference_mode():
        assert not torch.equal(vae.encode(x).mean[:, :, 0], vae.encode(changed).mean[:, :, 0])


# ---- tiling -----------------------------------------------------------------------------------
def _toy_decoder(z: torch.Tensor) -> torch.Tensor:
    """Position-exact stand-in for the decoder: latent 0 -> frame 0, latent k -> frames
    4k-3..4k, each latent pixel -> an 8x8 block. Tiled == untiled exactly iff the tiler's
    offsets, blends and crops are right."""
    index = torch.arange(z.shape[2]).repeat_interleave(4)[3:]
    return F.interpolate(z[:, :, index], scale_factor=(1, 8, 8), mode="nearest")


def _toy_encoder(x: torch.Tensor) -> torch.Tensor:
    return x[:, :, ::4, ::8, ::8]  # frames 0, 4, 8, ... and pixels 0, 8, 16, ...


@pytest.mark.parametrize("size, tsize, overlap", [(32, 16, 0.25), (32, 16, 0.5), (64, 32, 0.375)])
def test_tiler_is_exact_for_position_exact_maps(size, tsize, overlap):
    lat, ltime = size // 8, tsize // 4
    z = torch.randn(1, 2, 11, 9, 13)
    spatial = TilePlan.make(lat, size, overlap)
    tiled = temporal_tiled(z, lambda v: spatial_tiled(v, _toy_decoder, spatial),
                           TilePlan.make(ltime, tsize, overlap))
    torch.testing.assert_close(tiled, _toy_decoder(z), rtol=1e-6, atol=1e-6)
    x = torch.randn(1, 2, 41, 72, 104)
    spatial = TilePlan.make(size, lat, overlap)
    tiled = temporal_tiled(x, lambda v: spatial_tiled(v, _toy_encoder, spatial),
                           TilePlan.make(tsize, ltime, overlap))
    torch.testing.assert_close(tiled, _toy_encoder(x), rtol=1e-6, atol=1e-6)


def test_tiled_decode_matches_untiled_where_it_must():
    """Real model, several tiles in T, H and W. Tiled and untiled decodes of general latents
    differ (each tile has its own receptive field and GroupNorm statistics; the conformance
    data shows differences of ~3 with random weights), so equality is checked where it holds:
    for latents constant over (t, h, w) every tile sees the same field. Offsets/blends are
    covered exactly by the toy-map test above."""
    vae = tiny_vae()
    tiling = TilingConfig(32, 16, 0.25)
    z = torch.randn(1, 16, 1, 1, 1).expand(1, 16, 9, 6, 6).contiguous()
    with torch.inference_mode():
        log = _tile_shapes(vae, lambda: vae.decode(z, tiling=tiling))
        tiled, plain = log["result"], vae.decode(z, tiling=False)
    assert len(log["decoder"]) == 3 * 4
    assert tiled.shape == plain.shape == (1, 3, 33, 48, 48)
    # Only float rounding differs, amplified by GroupNorm over near-constant fields.
    torch.testing.assert_close(tiled, plain, rtol=0, atol=1e-3 * float(plain.abs().max()))


def test_tiling_switches_and_single_tile_is_untiled():
    vae = tiny_vae()
    z = torch.randn(1, 16, 3, 4, 4)  # fits in one 32-px / 16-frame tile
    with torch.inference_mode():
        plain = vae.decode(z)
        vae.enable_tiling()
        assert vae.tiling == TilingConfig(32, 16, 0.25)
        assert torch.equal(vae.decode(z), plain)
        vae.disable_tiling()
        assert vae.tiling is None
    with pytest.raises(ValueError, match="overlap"):
        TilingConfig(32, 16, 1.0)
    # The reference would silently return a misaligned 44x44 video for these tiles.
    with pytest.raises(ValueError, match="misaligned"):
        vae.decode(z, tiling=TilingConfig(16, 16, 0.25))
    with pytest.raises(ValueError, match="misaligned"):
        vae.enable_tiling(TilingConfig(32, 16, 0.3))


# ---- slicing, image mode, geometry ------------------------------------------------------------
def test_batch_slicing_matches_batched():
    """Sliced == batched up to the CPU conv kernels' batch-size-dependent rounding (~1e-6)."""
    vae = tiny_vae()
    x = torch.rand(3, 3, 5, 16, 16) * 2 - 1
    with torch.inference_mode():
        mean, z = vae.encode(x).mean, torch.randn(3, 16, 2, 1, 1)
        out = vae.decode(z)
        vae.use_slicing = True
        torch.testing.assert_close(vae.encode(x).mean, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vae.decode(z), out, rtol=1e-5, atol=1e-5)
        sliced = vae.decode(z)
        for i in range(3):  # each sliced item is exactly the single-item result
            assert torch.equal(sliced[i:i + 1], vae.decode(z[i:i + 1]))


def test_image_mode():
    vae = tiny_vae()
    with torch.inference_mode():
        post = vae.encode(torch.rand(2, 3, 1, 16, 24) * 2 - 1)
        assert post.mean.shape == post.std.shape == (2, 16, 1, 2, 3)
        assert bool((post.std > 0).all())
        assert vae.decode(post.mean).shape == (2, 3, 1, 16, 24)


def test_latent_shape_and_geometry():
    vae = tiny_vae()
    assert vae.latent_shape(129, 720, 1280) == (33, 90, 160)
    assert vae.latent_shape(1, 8, 8) == (1, 1, 1)
    assert (vae.time_compression_ratio, vae.spatial_compression_ratio) == (4, 8)
    assert vae.scaling_factor == pytest.approx(0.476986)
    with pytest.raises(ValueError, match=r"4n\+1.*use 125 or 129"):
        vae.latent_shape(128, 720, 1280)
    with pytest.raises(ValueError, match="multiples of 8.*use 720x1280"):
        vae.latent_shape(129, 721, 1280)
    with pytest.raises(ValueError, match="4n"):
        vae.encode(torch.zeros(1, 3, 4, 16, 16))


def test_config_names_and_validation():
    official = VAEConfig.from_dict(TINY)
    assert official.down_block_types == ("DownEncoderBlockCausal3D",) * 4
    diffusers_style = {**{k: v for k, v in TINY.items() if not k.startswith("_")},
                       "_class_name": "AutoencoderKLHunyuanVideo",
                       "temporal_compression_ratio": 4,
                       "down_block_types": ["HunyuanVideoDownBlock3D"] * 4,
                       "up_block_types": ["HunyuanVideoUpBlock3D"] * 4}
    assert VAEConfig.from_dict(diffusers_style) == official
    with pytest.raises(ValueError, match="time_compression_ratio"):
        VAEConfig.from_dict({**TINY, "time_compression_ratio": 8})
    with pytest.raises(ValueError, match="norm_num_groups"):
        VAEConfig.from_dict({**TINY, "norm_num_groups": 3})
    with pytest.raises(TypeError):
        VAEConfig.from_dict({"block_out_channels": [4]})  # dimensions have no defaults


# ---- loading ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_state():
    return {k: v.clone() for k, v in tiny_vae().state_dict().items()}


def _folder(tmp_path, state, name="pytorch_model.pt", wrap=lambda sd: sd):
    folder = tmp_path / "vae"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY))
    if name.endswith(".safetensors"):
        save_file(state, str(folder / name))
    else:
        torch.save(wrap(state), folder / name)
    return folder


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd},
    lambda sd: {"state_dict": {**{f"vae.{k}": v for k, v in sd.items()},
                               "loss.logvar": torch.zeros(1)}},
], ids=["flat", "state_dict", "state_dict+vae.prefix"])
def test_load_official_layouts(tmp_path, tiny_state, wrap):
    vae = load_vae(_folder(tmp_path, tiny_state, wrap=wrap), dtype=torch.float32)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, tiny_state[key]), key
    assert not any(p.is_meta for p in vae.parameters())


def test_load_dtypes_and_safetensors(tmp_path, tiny_state):
    folder = _folder(tmp_path, tiny_state, name="diffusion_pytorch_model.safetensors")
    assert next(load_vae(folder).parameters()).dtype == torch.float16  # the default
    assert next(load_vae(folder, dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16
    vae = load_vae(VAEConfig.from_dict(TINY), weights=folder / "diffusion_pytorch_model.safetensors",
                   dtype=torch.float32)
    assert torch.equal(vae.state_dict()["quant_conv.weight"], tiny_state["quant_conv.weight"])


def test_load_missing_files(tmp_path, tiny_state):
    with pytest.raises(CheckpointError, match="VAE folder not found.*ckpts/hunyuan-video-t2v-720p/vae"):
        load_vae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="VAE config not found"):
        load_vae(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(CheckpointError, match=r"VAE weights \(pytorch_model.pt"):
        load_vae(tmp_path / "empty")


def test_load_wrong_keys_and_shapes(tmp_path, tiny_state):
    state = dict(tiny_state)
    state.pop("decoder.conv_out.conv.bias")
    state["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="decoder.conv_out.conv.bias.*decoder.extra.weight"):
        load_vae(_folder(tmp_path, state), dtype=torch.float32)
    state = dict(tiny_state)
    state["post_quant_conv.weight"] = torch.zeros(16, 16, 1, 1, 2)
    with pytest.raises(CheckpointError, match=r"post_quant_conv.weight \(16, 16, 1, 1, 2\)"):
        load_vae(_folder(tmp_path, state), dtype=torch.float32)


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_load_refuses_code_execution(tmp_path, monkeypatch, tiny_state):
    folder = _folder(tmp_path, tiny_state)
    with open(folder / "pytorch_model.pt", "wb") as f:  # a plain pickle that runs code on load
        pickle.dump({"state_dict": tiny_state, "x": _Exploit()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="refusing"):
        load_vae(folder)
    assert not (tmp_path / "PWNED").exists()
