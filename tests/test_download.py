"""scripts/download_weights.py offline: each layout's allow_patterns against folders laid out like
the real repositories, and the loader's path derivation on the folder the download leaves."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("download_weights", ROOT / "scripts" / "download_weights.py")
dw = importlib.util.module_from_spec(spec)
sys.modules["download_weights"] = dw  # dataclasses look their module up while the class is made
spec.loader.exec_module(dw)

T2V = "hunyuan-video-t2v-720p"
I2V = "hunyuan-video-i2v-720p"
# The files of each repository (as listed on the Hub; sizes do not matter here).
# The diffusers-format repos (T2V and I2V) share this layout; I2V adds the image processor.
DIFFUSERS_FILES = [
    ".gitattributes", "README.md", "model_index.json", "scheduler/scheduler_config.json",
    "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
    *(f"transformer/diffusion_pytorch_model-0000{i}-of-00006.safetensors" for i in range(1, 7)),
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json", "text_encoder/model.safetensors.index.json",
    *(f"text_encoder/model-0000{i}-of-00004.safetensors" for i in range(1, 5)),
    "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
    "tokenizer/special_tokens_map.json", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
    "tokenizer_2/merges.txt", "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/tokenizer_config.json", "tokenizer_2/vocab.json",
]

REPOS = {
    "tencent/HunyuanVideo": [
        ".gitattributes", "LICENSE", "Notice", "README.md", "assets/video_poster.png",
        f"{T2V}/transformers/mp_rank_00_model_states.pt",
        f"{T2V}/transformers/mp_rank_00_model_states_fp8.pt",
        f"{T2V}/transformers/mp_rank_00_model_states_fp8_map.pt",
        f"{T2V}/vae/config.json", f"{T2V}/vae/pytorch_model.pt",
    ],
    "xtuner/llava-llama-3-8b-v1_1-transformers": [
        ".gitattributes", "README.md", "config.json", "generation_config.json",
        *(f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)), "model.safetensors.index.json",
        "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
    ],
    "openai/clip-vit-large-patch14": [
        ".gitattributes", "README.md", "config.json", "flax_model.msgpack", "merges.txt",
        "model.safetensors", "preprocessor_config.json", "pytorch_model.bin", "special_tokens_map.json",
        "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "vocab.json",
    ],
    "tencent/HunyuanVideo-I2V": [
        ".gitattributes", "README.md", "assets/demo.png",
        f"{I2V}/transformers/mp_rank_00_model_states.pt",
        f"{I2V}/vae/config.json", f"{I2V}/vae/pytorch_model.pt",
        f"{I2V}/lora/embrace_kohaya_weights.safetensors", f"{I2V}/lora/hair_growth_kohaya_weights.safetensors",
    ],
    "hunyuanvideo-community/HunyuanVideo-I2V": [*DIFFUSERS_FILES, "image_processor/preprocessor_config.json"],
    "hunyuanvideo-community/HunyuanVideo": DIFFUSERS_FILES,
}


def _fetched(layout: str, dit: str = "bf16") -> dict[str, list[str]]:
    return {f.repo: dw.select(REPOS[f.repo], f.patterns) for f in dw.LAYOUTS[layout].fetches(dit)}


def test_official_patterns_take_only_what_the_loader_reads():
    got = _fetched("official")
    assert got["tencent/HunyuanVideo"] == sorted([
        f"{T2V}/transformers/mp_rank_00_model_states.pt", f"{T2V}/vae/config.json",
        f"{T2V}/vae/pytorch_model.pt"])
    llava = got["xtuner/llava-llama-3-8b-v1_1-transformers"]
    assert len([p for p in llava if p.endswith(".safetensors")]) == 4
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json"} <= set(llava)
    assert not {"README.md", ".gitattributes"} & set(llava)
    assert got["openai/clip-vit-large-patch14"] == sorted([
        "config.json", "merges.txt", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.json"])  # not the .bin / .h5 / .msgpack copies (5 GB)


@pytest.mark.parametrize("dit,expected", [
    ("fp8", {"mp_rank_00_model_states_fp8.pt", "mp_rank_00_model_states_fp8_map.pt"}),
    ("both", {"mp_rank_00_model_states.pt", "mp_rank_00_model_states_fp8.pt",
              "mp_rank_00_model_states_fp8_map.pt"}),
])
def test_dit_choice(dit, expected):
    files = _fetched("official", dit)["tencent/HunyuanVideo"]
    assert {Path(p).name for p in files if "/transformers/" in p} == expected


def test_diffusers_patterns_take_every_component_folder():
    (files,) = _fetched("diffusers").values()
    wanted = [p for p in REPOS["hunyuanvideo-community/HunyuanVideo"]
              if p not in (".gitattributes", "README.md")]
    assert files == sorted(wanted)


def _local_hub(tmp_path: Path) -> Path:
    """Every repository as a folder of empty files."""
    hub = tmp_path / "hub"
    for repo, files in REPOS.items():
        for name in files:
            (hub / repo / name).parent.mkdir(parents=True, exist_ok=True)
            (hub / repo / name).write_bytes(b"")
            if name.endswith(".safetensors.index.json"):  # the shard index names its shards
                folder = Path(name).parent
                shards = [Path(f).name for f in files if Path(f).parent == folder
                          and f.endswith(".safetensors") and "-of-" in f]
                weight_map = {f"tensor{i}": shard for i, shard in enumerate(shards)}
                (hub / repo / name).write_text(json.dumps({"weight_map": weight_map}))
    return hub


def _fake_snapshot(hub: Path, calls: list):
    def snapshot_download(*, repo_id, local_dir, allow_patterns):
        calls.append(repo_id)
        for name in dw.select(REPOS[repo_id], allow_patterns):
            (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(hub / repo_id / name, Path(local_dir) / name)
    return snapshot_download


def _fake_extract(root: Path) -> None:
    """What scripts/extract_text_encoder.py writes (the real one needs real weights): the config,
    the shards with their index, the tokenizer files."""
    (root / "text_encoder").mkdir()
    for file in (root / dw.LLAVA_FOLDER).iterdir():
        if file.suffix in (".json", ".safetensors") and file.name != "preprocessor_config.json":
            shutil.copy(file, root / "text_encoder" / file.name)


def test_official_download_leaves_a_folder_the_loader_accepts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dw.LAYOUTS, "official", dataclasses.replace(dw.LAYOUTS["official"],
                                                                     after=_fake_extract))
    calls = []
    root = tmp_path / "ckpts"
    assert dw.main(["--root", str(root), "--dit", "both"],
                   fetch_fn=_fake_snapshot(_local_hub(tmp_path), calls)) == 0
    assert calls == ["tencent/HunyuanVideo", "xtuner/llava-llama-3-8b-v1_1-transformers",
                     "openai/clip-vit-large-patch14"]
    assert "every component of the official layout is in place" in capsys.readouterr().out
    for missing in (f"{T2V}/vae/pytorch_model.pt", f"{T2V}/transformers/mp_rank_00_model_states_fp8_map.pt",
                    "text_encoder_2/model.safetensors", "text_encoder/tokenizer.json"):
        (root / missing).rename(root / "aside")
        assert dw.main(["--root", str(root), "--check-only", "--dit", "both"]) == 2, missing
        assert Path(missing).parent.name in capsys.readouterr().err, missing
        (root / "aside").rename(root / missing)


def test_diffusers_download_leaves_a_folder_the_loader_accepts(tmp_path, capsys):
    root = tmp_path / "hv"
    assert dw.main(["--layout", "diffusers", "--root", str(root)],
                   fetch_fn=_fake_snapshot(_local_hub(tmp_path), [])) == 0
    for missing in ("tokenizer_2", "transformer/diffusion_pytorch_model-00003-of-00006.safetensors",
                    "vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json"):
        (root / missing).rename(root / "aside")
        assert dw.main(["--layout", "diffusers", "--root", str(root), "--check-only"]) == 2, missing
        assert missing.split("/")[0] in capsys.readouterr().err, missing
        (root / "aside").rename(root / missing)


def test_dry_run_lists_files_with_sizes_and_survives_an_unlistable_repo(tmp_path, capsys):
    def lister(repo):
        if repo.startswith("openai/"):
            raise OSError("offline")
        return {name: 2_000_000_000 for name in REPOS[repo]}

    assert dw.main(["--root", str(tmp_path), "--dry-run"], lister=lister) == 0
    out = capsys.readouterr().out
    assert f"{T2V}/transformers/mp_rank_00_model_states.pt  2.00 GB" in out
    assert "fp8" not in out.split("xtuner")[0].split("allow_patterns")[1].split("\n", 1)[1]
    assert "cannot list openai/clip-vit-large-patch14: OSError: offline" in out
    assert "without the 1 unlisted repositories" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_official_i2v_download_leaves_a_folder_the_loader_accepts(tmp_path, capsys):
    calls = []
    root = tmp_path / "ckpts"
    assert dw.main(["--layout", "official-i2v", "--root", str(root)],
                   fetch_fn=_fake_snapshot(_local_hub(tmp_path), calls)) == 0
    assert calls == ["tencent/HunyuanVideo-I2V", "xtuner/llava-llama-3-8b-v1_1-transformers",
                     "openai/clip-vit-large-patch14"]
    assert (root / I2V / "lora" / "embrace_kohaya_weights.safetensors").is_file()
    assert not (root / "assets").exists()
    for missing in (f"{I2V}/vae/pytorch_model.pt", f"{I2V}/transformers/mp_rank_00_model_states.pt",
                    "text_encoder_i2v/preprocessor_config.json", "text_encoder_2/model.safetensors"):
        (root / missing).rename(root / "aside")
        assert dw.main(["--layout", "official-i2v", "--root", str(root), "--check-only"]) == 2, missing
        err = capsys.readouterr().err
        assert Path(missing).name in err or Path(missing).parent.name in err, (missing, err)
        (root / "aside").rename(root / missing)


def test_official_i2v_check_with_the_fp8_dit_needs_its_map(tmp_path, capsys):
    root = tmp_path / "ckpts"
    assert dw.main(["--layout", "official-i2v", "--root", str(root)],
                   fetch_fn=_fake_snapshot(_local_hub(tmp_path), [])) == 0
    transformers = root / I2V / "transformers"
    (transformers / "mp_rank_00_model_states_fp8.pt").write_bytes(b"")
    argv = ["--layout", "official-i2v", "--root", str(root), "--check-only", "--dit", "fp8"]
    assert dw.main(argv) == 2
    assert "mp_rank_00_model_states_fp8_map.pt" in capsys.readouterr().err
    (transformers / "mp_rank_00_model_states_fp8_map.pt").write_bytes(b"")
    assert dw.main(argv) == 0


def test_diffusers_i2v_patterns_take_every_component_folder_and_the_check_needs_the_image_processor(tmp_path, capsys):
    (files,) = _fetched("diffusers-i2v").values()
    assert "image_processor/preprocessor_config.json" in files and "README.md" not in files
    root = tmp_path / "hv-i2v"
    assert dw.main(["--layout", "diffusers-i2v", "--root", str(root)],
                   fetch_fn=_fake_snapshot(_local_hub(tmp_path), [])) == 0
    shutil.rmtree(root / "image_processor")
    assert dw.main(["--layout", "diffusers-i2v", "--root", str(root), "--check-only"]) == 2
    assert "image_processor" in capsys.readouterr().err
