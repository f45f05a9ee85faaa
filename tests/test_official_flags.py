"""The official flags this project added (--save-path-suffix, --name-suffix, --prompt-ids, the
architecture-describing ones), and --resume that finds nothing to do loading nothing."""

from __future__ import annotations

import json
import logging

import pytest

from hyvideo.apps import sample

FAST = ["--model", "tiny-random", "--video-size", "32", "32", "--video-length", "5", "--infer-steps", "1",
        "--seed", "1", "--quiet", "--output-type", "latents"]


def test_save_path_suffix_and_name_suffix(tmp_path):
    assert sample.main([*FAST, "--prompt", "a fox", "--save-path", str(tmp_path / "out"),
                        "--save-path-suffix", "run2", "--name-suffix", "v2"]) == 0
    folder = tmp_path / "out_run2"  # the official <save-path>_<suffix>
    (file,) = folder.glob("*.safetensors")
    assert file.stem.endswith("_v2") and not (tmp_path / "out").exists()


def test_prompt_ids_run_part_of_a_file(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(1, 13)))
    out = tmp_path / "out"
    assert sample.main([*FAST, "--prompt-file", str(prompts), "--prompt-ids", "2-3,11",
                        "--save-path", str(out)]) == 0
    ids = sorted(json.loads(line)["id"] for line in (out / "manifest.jsonl").read_text().splitlines())
    assert ids == ["11", "2", "3"]


def test_resume_with_nothing_left_loads_nothing(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a fox\na tree\n")
    out = tmp_path / "out"
    assert sample.main([*FAST, "--prompt-file", str(prompts), "--save-path", str(out)]) == 0
    import hyvideo.runtime.build as build

    monkeypatch.setattr(build, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    capsys.readouterr()
    assert sample.main([*FAST, "--prompt-file", str(prompts), "--save-path", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--vae", "884-16c-hy"), ("--text-encoder", "llm"),
                                        ("--rope-theta", "256"), ("--flow-solver", "euler"),
                                        ("--prompt-template-video", "dit-llm-encode-video")])
def test_architecture_flags_take_their_one_value(tmp_path, caplog, flag, value):
    caplog.set_level(logging.INFO, logger="hyvideo")
    assert sample.main([*FAST, "--prompt", "a fox", "--save-path", str(tmp_path), flag, value]) == 0
    assert f"{flag} {value} describes the fixed architecture" in caplog.text
