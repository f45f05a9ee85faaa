"""sample_video.py: the offline demo end to end, batches, resume, and the bad-input catalogue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sample_video
from hyvideo.apps.video_io import read_mp4_frames, read_mp4_metadata
from tests.conftest import ROOT

SMALL = ["--model", "tiny-random", "--video-size", "64", "96", "--video-length", "9", "--infer-steps", "3",
         "--quiet"]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "sample_video.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_readme_demo_command_makes_the_requested_video(tmp_path):
    """The README's demo command (tiny-random, its default size) gives a playable mp4."""
    start = time.perf_counter()
    proc = run_cli("--model", "tiny-random", "--prompt", "A cat walks on the grass, realistic style.",
                   "--seed", "7", "--save-path", tmp_path)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" in proc.stderr
    (video,) = tmp_path.glob("*.mp4")
    frames = read_mp4_frames(video)
    assert frames.shape == (33, 128, 192, 3)  # the tiny preset's defaults
    meta = read_mp4_metadata(video)
    assert meta["prompt"] == "A cat walks on the grass, realistic style." and meta["seed"] == 7
    assert meta["infer_steps"] == 12 and meta["model"] == "tiny-random" and meta["random_weights"]
    record = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    assert Path(record["output"]) == video and record["seconds"] > 0
    assert elapsed < 120  # "under a minute" on an idle 2-core machine; slack for a busy CI


def main_in_process(*args) -> int:
    """sample_video.main in this process (the subprocess tests cover the real start-up)."""
    return sample_video.main([str(a) for a in args])


def test_requested_size_and_frames_and_existing_file_not_overwritten(tmp_path):
    args = [*SMALL, "--prompt", "waves", "--seed", "3", "--save-path", tmp_path,
            "--video-size", "48", "80", "--video-length", "13"]
    assert main_in_process(*args) == 0
    assert main_in_process(*args) == 0
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 2  # same id-less name twice: a second file, never a replacement
    for v in videos:
        assert read_mp4_frames(v).shape == (13, 48, 80, 3)
    assert not list(tmp_path.glob(".*partial"))


def test_frames_and_latents_outputs(tmp_path):
    assert main_in_process(*SMALL, "--prompt", "a", "--seed", "1", "--save-path", tmp_path, "--output-type", "frames") == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(list(folder.glob("*.png"))) == 9 and json.loads((folder / "settings.json").read_text())["seed"] == 1
    assert main_in_process(*SMALL, "--prompt", "a", "--seed", "1", "--save-path", tmp_path, "--output-type", "latents") == 0
    from safetensors import safe_open

    (file,) = tmp_path.glob("*.safetensors")
    with safe_open(str(file), "pt") as f:
        latents = f.get_tensor("latents")
        assert json.loads(f.metadata()["settings"])["seed"] == 1
    assert latents.shape == (1, 16, 3, 8, 12) and latents.dtype == torch.float32


def _latents_of(folder) -> torch.Tensor:
    from safetensors import safe_open

    (file,) = folder.glob("*.safetensors")
    with safe_open(str(file), "pt") as f:
        return f.get_tensor("latents")


def test_offload_flags_give_the_same_latents(tmp_path):
    """--offload blocks (K=1) and the official --use-cpu-offload, end to end through the CLI."""
    runs = {"none": [], "blocks": ["--offload", "blocks", "--blocks-on-device", "1"], "official": ["--use-cpu-offload"]}
    latents = {}
    for name, flags in runs.items():
        out = tmp_path / name
        assert main_in_process(*SMALL, "--prompt", "a", "--seed", "3", "--save-path", out,
                               "--output-type", "latents", *flags) == 0
        latents[name] = _latents_of(out)
    assert torch.equal(latents["blocks"], latents["none"])
    assert torch.equal(latents["official"], latents["none"])


def test_cache_flag_records_what_it_skipped(tmp_path):
    out = tmp_path / "cached"
    assert main_in_process(*SMALL, "--infer-steps", "8", "--prompt", "a", "--seed", "3", "--save-path", out,
                           "--output-type", "latents", "--cache", "teacache", "--cache-threshold", "1e6") == 0
    from safetensors import safe_open

    (file,) = out.glob("*.safetensors")
    with safe_open(str(file), "pt") as f:
        cache = json.loads(f.metadata()["settings"])["cache"]
    # a huge threshold skips every step but the first and the last, which always run
    assert cache == {"mode": "teacache", "threshold": 1e6, "skipped_steps": [1, 2, 3, 4, 5, 6]}


@pytest.fixture(scope="module")
def tiny():
    from hyvideo.pipeline.options import LoadOptions
    from hyvideo.runtime.build import RuntimeOptions, load_pipeline

    return load_pipeline(LoadOptions(model="tiny-random"), RuntimeOptions(device=torch.device("cpu")))


def test_same_seed_same_latents_different_seed_differs(tiny):
    req = tiny.request("a red balloon", height=48, width=64, video_length=5, infer_steps=2, seed=11)
    a = tiny(req, decode=False, show_progress=False).latents
    b = tiny(req, decode=False, show_progress=False).latents
    c = tiny(req.__class__(**{**req.settings(), "seed": 12}), decode=False, show_progress=False).latents
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_num_videos_use_consecutive_seeds(tiny):
    req = tiny.request("x", height=32, width=32, video_length=5, infer_steps=2, seed=5, num_videos=2, batch_size=2)
    both = tiny(req, decode=False, show_progress=False)
    one = tiny(req.__class__(**{**req.settings(), "seed": 6, "num_videos": 1, "batch_size": 1}),
               decode=False, show_progress=False)
    assert both.seeds == [5, 6]
    torch.testing.assert_close(both.latents[1:], one.latents, atol=1e-5, rtol=1e-5)


def test_cfg_runs_negative_branch_and_callback_reports_steps(tiny):
    events = []
    req = tiny.request("x", height=32, width=32, video_length=5, infer_steps=3, cfg_scale=4.0)
    tiny(req, decode=True, show_progress=False, callback=events.append)
    denoise = [e for e in events if e.stage == "denoise"]
    assert [e.step for e in denoise] == [1, 2, 3]
    assert denoise[0].info.model_output.shape[0] == 2  # [negative; positive]
    assert {e.stage for e in events} == {"text", "denoise", "decode"}


CSV = ',prompt\n0,"A cat, with a ""hat""\non two lines"\n1,Un café à Paris — 東京の夜\n2,plain\n'


def test_batch_csv_with_multiline_quoted_and_unicode_rows(tmp_path):
    csv = tmp_path / "prompts.csv"
    csv.write_text(CSV, encoding="utf-8")
    out = tmp_path / "out"
    assert main_in_process(*SMALL, "--prompt-file", csv, "--seed", "100", "--save-path", out,
                           "--output-type", "latents") == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["0", "1", "2"]
    assert [r["seed"] for r in records] == [100, 101, 102]
    assert records[0]["prompt"] == 'A cat, with a "hat"\non two lines'
    assert records[1]["prompt"] == "Un café à Paris — 東京の夜"
    assert all(Path(r["output"]).is_file() for r in records)


def test_jsonl_and_txt_prompt_files(tmp_path):
    from hyvideo.apps.batch import read_prompt_file

    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a", "seed": 9}\n\n{"prompt": "b", "id": "x", "negative_prompt": "blur"}\n')
    jobs = read_prompt_file(j, 50)
    assert [(x.id, x.seed, x.negative_prompt) for x in jobs] == [("1", 9, None), ("x", 53, "blur")]  # non-integer id: base + line number
    t = tmp_path / "p.txt"
    t.write_text("first\n\nthird\n")
    assert [(x.id, x.prompt, x.seed) for x in read_prompt_file(t, 0)] == [("1", "first", 1), ("3", "third", 3)]


def test_resume_after_a_killed_batch(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"prompt {i}" for i in range(6)) + "\n")
    out = tmp_path / "out"
    args = [sys.executable, "sample_video.py", *SMALL, "--prompt-file", str(prompts), "--seed", "0",
            "--save-path", str(out), "--output-type", "latents"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(manifest.read_text().splitlines())
    assert 2 <= done_before < 6
    resumed = run_cli(*SMALL, "--prompt-file", prompts, "--seed", "0", "--save-path", out,
                      "--output-type", "latents", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [str(i) for i in range(1, 7)]  # each exactly once
    assert len(list(out.glob("*.safetensors"))) == 6
    assert not list(out.glob(".*partial"))


# --- the bad-input catalogue: one line on stderr, exit code 2, no traceback, nothing written ---

def _fake_ckpts(root: Path, dit_state: dict | None = None) -> Path:
    model = root / "hunyuan-video-t2v-720p"
    (model / "transformers").mkdir(parents=True)
    (model / "vae").mkdir()
    (root / "text_encoder").mkdir()
    (root / "text_encoder_2").mkdir()
    torch.save({"module": dit_state or {"img_in.proj.weight": torch.zeros(3072, 16, 1, 2, 2)}},
               model / "transformers" / "mp_rank_00_model_states.pt")
    return root


BAD = [
    (["--prompt", "x", "--video-size", "100", "200"], "height 100 is not a positive multiple of 16; use 96 or 112"),
    (["--prompt", "x", "--video-length", "30"], "video length 30 is not 4n+1; use 29 or 33"),
    (["--prompt", "x", "--infer-steps", "0"], "infer steps must be a positive integer"),
    (["--prompt", "   "], "the prompt is empty: describe the video to generate"),
    ([], "give either --prompt"),
    (["--prompt", "x", "--model", "HYVideo-XL"], "unknown model 'HYVideo-XL'; choose one of"),
    (["--prompt", "x", "--embedded-cfg-scale", "-1"], "embedded cfg scale must be >= 0"),
    (["--prompt", "x", "--cfg-scale", "-2"], "cfg scale must be >= 0"),
    (["--prompt", "x", "--flow-shift", "0"], "flow shift must be > 0"),
    (["--prompt", "x", "--model-base", "{tmp}/nothing"], "model folder {tmp}/nothing not found: download the official files"),
    (["--prompt", "x", "--model-base", "{ckpts}", "--use-fp8"], "missing dit at"),
    (["--prompt", "x", "--model-base", "{ckpts}"], "does not match HYVideoDiffusionTransformer: 855 missing keys"),
    (["--prompt", "x", "--model-base", "{ckpts_noclip}"], "missing text encoder 2 at"),
    (["--prompt", "x", "--save-path", "/proc/forbidden"], "cannot create --save-path /proc/forbidden"),
    (["--prompt-file", "{tmp}/none.csv"], "prompt file not found"),
    (["--prompt-file", "{empty}"], "no prompts in the file"),
    (["--prompt-file", "{badcsv}"], "the CSV header has no 'prompt' column"),
    (["--prompt-file", "{badjsonl}"], "line 2: not valid JSON"),
    (["--prompt-file", "{prompts}", "--resume"], "--resume: no manifest at"),
    (["--prompt", "x", "--resolution", "720p-16:9", "--video-size", "64", "64"], "either --video-size or --resolution"),
    (["--prompt", "x", "--ulysses-degree", "2"], "1 were started; launch with torchrun --nproc_per_node=2"),
    (["--prompt", "x", "--fp8-matmul"], "--fp8-matmul needs --use-fp8"),
    (["--prompt", "x", "--compile", "--offload", "blocks"], "--compile cannot be combined with --offload blocks"),
    (["--prompt", "x", "--cache", "teacache", "--cache-threshold", "-1"], "cache threshold must be a finite number >= 0"),
    (["--prompt", "x", "--use-cpu-offload", "--offload", "blocks"], "--use-cpu-offload means --offload model"),
    (["--prompt", "x", "--offload", "blocks", "--blocks-on-device", "0"], "blocks on device must be an integer >= 1"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    subs = {"tmp": str(tmp_path), "ckpts": str(_fake_ckpts(tmp_path / "ckpts")),
            "empty": tmp_path / "empty.txt", "badcsv": tmp_path / "bad.csv",
            "badjsonl": tmp_path / "bad.jsonl", "prompts": tmp_path / "p.txt"}
    noclip = _fake_ckpts(tmp_path / "noclip")
    (noclip / "text_encoder_2").rmdir()
    subs["ckpts_noclip"] = str(noclip)
    subs["empty"].write_text("\n\n")
    subs["badcsv"].write_text("text\nhello\n")
    subs["badjsonl"].write_text('{"prompt": "a"}\n{oops\n')
    subs["prompts"].write_text("a\n")
    save = tmp_path / "out"
    argv = [a.format(**subs) for a in args]
    if "--save-path" not in argv:
        argv += ["--save-path", str(save)]
    code = sample_video.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2
    assert len(errors) == 1 and message.format(**subs) in errors[0], err
    assert not any("Traceback" in line for line in err)
    assert not save.exists() or not any(save.iterdir())


def test_out_of_memory_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from hyvideo.pipeline.t2v import HunyuanVideoPipeline

    def boom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(HunyuanVideoPipeline, "__call__", boom)
    code = sample_video.main([*SMALL, "--prompt", "x", "--save-path", str(tmp_path)])
    assert code == 2
    assert "out of memory while generating; lower memory with --offload model" in capsys.readouterr().err


def test_help_documents_every_flag():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--use-cpu-offload", "--offload", "--cache", "--cache-threshold", "--blocks-on-device", "--fp8-matmul", "--compile",
                 "--attention", "--no-flow-reverse", "--no-vae-tiling", "--embedded-cfg-scale",
                 "--resolution", "--prompt-file", "--output-type", "--ulysses-degree"):
        assert flag in proc.stdout
    assert "the same as --offload model" in " ".join(proc.stdout.split())
