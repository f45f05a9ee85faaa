"""Multi-process generation on CPU (gloo): every parallel mode equals the single-process result.

Each test launches ``torch.distributed.run`` with 2 to 4 processes running
tests/parallel_worker.py or sample_video.py on tiny random models in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import sample_video
from tests.conftest import ROOT, stop_process
from tests.dit_utils import random_dit, random_inputs, tiny_config
from tests.parallel_worker import tiny_vae_and_latents

pytest.importorskip("yunchang")
TOL = 1e-4


def torchrun(nproc: int, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           "--standalone", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def worker(tmp_path, mode: str, u: int, r: int, cfg: int = 1) -> dict:
    out = tmp_path / f"{mode}_{u}_{r}_{cfg}.pt"
    proc = torchrun(u * r * cfg, "tests/parallel_worker.py", mode, out, u, r, cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def single_forward():
    config = tiny_config(heads_num=4, rope_dim_list=(4, 6, 6))
    dit = random_dit(config)
    x, t, states, mask, pooled, guidance = random_inputs(config, batch=2, thw=(3, 4, 8), text_len=9, valid=(7, 3))
    with torch.inference_mode():
        return dit(x, t, states, mask, pooled, guidance)


@pytest.mark.parametrize("u,r", [(2, 1), (1, 2), (2, 2), (1, 4)], ids=["ulysses2", "ring2", "hybrid2x2", "ring4"])
def test_sequence_parallel_forward_equals_single_process(tmp_path, single_forward, u, r):
    got = worker(tmp_path, "forward", u, r)["out"]
    assert (got - single_forward).abs().max() <= TOL


@pytest.mark.parametrize("u", [1, 2], ids=["cfg2", "cfg2_ulysses2"])
def test_cfg_parallel_equals_sequential_cfg(tmp_path, u):
    sequential = worker(tmp_path, "denoise", 1, 1, 1)["latents"]
    parallel = worker(tmp_path, "denoise", u, 1, 2)["latents"]
    assert (parallel - sequential).abs().max() <= TOL


def test_parallel_vae_decode_equals_single_process(tmp_path):
    vae, z, tiling = tiny_vae_and_latents()
    with torch.inference_mode():
        expected = vae.decode(z, tiling=tiling)
    got = worker(tmp_path, "decode", 1, 2)["video"]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= TOL


def test_a_failing_rank_stops_every_rank_quickly(tmp_path):
    start = time.perf_counter()
    proc = torchrun(2, "tests/parallel_worker.py", "raise", tmp_path / "x.pt", 1, 1, 2, timeout=120)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr
    assert time.perf_counter() - start < 90


SMALL = ["--model", "tiny-random", "--prompt", "a red kite over the sea", "--video-size", "64", "96",
         "--video-length", "9", "--infer-steps", "3", "--seed", "5", "--quiet"]


def test_cli_under_torchrun_matches_single_process(tmp_path):
    single, para = tmp_path / "single", tmp_path / "ulysses"
    assert sample_video.main([*SMALL, "--save-path", str(single), "--output-type", "latents"]) == 0
    proc = torchrun(2, "sample_video.py", *SMALL, "--ulysses-degree", "2", "--save-path", para,
                    "--output-type", "latents")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    (a,), (b,) = single.glob("*.safetensors"), para.glob("*.safetensors")
    assert (load_file(str(a))["latents"] - load_file(str(b))["latents"]).abs().max() <= TOL
    assert len((para / "manifest.jsonl").read_text().splitlines()) == 1  # rank 0 writes alone


def test_cli_under_torchrun_writes_one_video(tmp_path):
    proc = torchrun(2, "sample_video.py", *SMALL, "--ring-degree", "2", "--save-path", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from hyvideo.apps.video_io import read_mp4_frames

    (video,) = tmp_path.glob("*.mp4")
    assert read_mp4_frames(video).shape == (9, 64, 96, 3)
    record = json.loads((tmp_path / "manifest.jsonl").read_text())
    assert record["seed"] == 5


@pytest.mark.parametrize("world,args,message", [
    ("1", ["--ulysses-degree", "2"], "= 2 processes, but 1 were started; launch with torchrun --nproc_per_node=2"),
    ("3", ["--ulysses-degree", "3"], "ulysses 3 x ring 1 cannot split this size (12 image tokens = 3x2x2, 4 heads)"
                                     ": ulysses must divide the heads and ulysses*ring the tokens; valid ulysses x ring"
                                     " for 3 processes: 1x3"),
    ("5", ["--ring-degree", "5"], "valid ulysses x ring for 5 processes: none"),
])
def test_invalid_degrees_fail_before_loading(tmp_path, capsys, monkeypatch, world, args, message):
    monkeypatch.setenv("WORLD_SIZE", world)
    import hyvideo.runtime.build as build

    monkeypatch.setattr(build, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    code = sample_video.main(["--model", "tiny-random", "--prompt", "x", "--video-size", "32", "32",
                              "--video-length", "9", *args, "--save-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_web_demo_under_torchrun_rank0_serves_and_cancel_reaches_every_rank(tmp_path):
    """Rank 0 serves the page; rank 1 follows its requests; a cancel stops both ranks."""
    pytest.importorskip("gradio_client")
    from gradio_client import Client

    from hyvideo.apps.video_io import read_mp4_frames
    from tests.test_gradio import free_port, wait_for_progress, wait_until_up

    port, log = free_port(), tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "gradio_server.py", "--model", "tiny-random", "--ulysses-degree", "2",
           "--server-port", str(port), "--output-dir", str(tmp_path / "videos"), "--max-steps", "2000"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/", proc, log)
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        small = {"resolution": "custom", "height": 32, "width": 48, "video_length": 5}
        video, mp4, *_ = c.predict(api_name="/generate", prompt="a boat", infer_steps=2, **small)
        assert read_mp4_frames(mp4).shape == (5, 32, 48, 3)
        job = c.submit(api_name="/generate", prompt="long", infer_steps=2000, **small)
        wait_for_progress(job)
        assert c.predict(api_name="/cancel").startswith("Cancelled at denoising")
        assert job.result()[4].startswith("Cancelled at denoising")
        video, mp4, *_ = c.predict(api_name="/generate", prompt="after cancel", infer_steps=2, **small)
        assert read_mp4_frames(mp4).shape == (5, 32, 48, 3)  # both ranks are free and in step
        assert proc.poll() is None
    finally:
        stop_process(proc)
