"""The hostile-input catalogue (issue 16): what a careless user or an attacker may hand each entry
point, grouped by the issue's classes and our own.

Every case asserts the exit code (2 for usage), exactly one message line naming the problem, no
traceback, and that nothing was written or lost. Most cases call ``main(argv)`` in this process
(fast); the few that must see a fresh interpreter (what is imported before the error) are grouped
at the end. Image inputs are covered by tests/test_image_input.py.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyvideo.apps import sample
from tests.conftest import ROOT

TINY = ["--model", "tiny-random"]
SMALL = [*TINY, "--video-size", "16", "16", "--video-length", "1", "--infer-steps", "1", "--quiet",
         "--output-type", "latents"]
LOG_PREFIXES = ("INFO ", "WARNING ", "DEBUG ")


def outcome(capsys) -> tuple[list[str], str]:
    """The message lines on stderr (log lines left out) and the whole of it."""
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip() and not line.startswith(LOG_PREFIXES)], err


def assert_one_line(code: int, capsys, *needles: str, exit_code: int = 2) -> str:
    lines, err = outcome(capsys)
    assert code == exit_code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nothing_written(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def fake_ckpts(root: Path, dit: bytes | None = None) -> Path:
    """The official layout with every path present; the DiT file holds ``dit`` (default: a
    state dict with one key)."""
    model = root / "hunyuan-video-t2v-720p"
    (model / "transformers").mkdir(parents=True)
    (model / "vae").mkdir()
    (root / "text_encoder").mkdir()
    (root / "text_encoder_2").mkdir()
    target = model / "transformers" / "mp_rank_00_model_states.pt"
    if dit is None:
        torch.save({"module": {"img_in.proj.weight": torch.zeros(2, 2)}}, target)
    else:
        target.write_bytes(dit)
    return root


@pytest.fixture
def ws(tmp_path):
    """Paths the cases name: {tmp}, {out}, {file}, {ckpts}, {lora}."""
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    (tmp_path / "lora.safetensors").write_bytes(b"")
    return {"tmp": tmp_path, "out": tmp_path / "out", "file": tmp_path / "a_file.txt",
            "ckpts": fake_ckpts(tmp_path / "ckpts"), "lora": tmp_path / "lora.safetensors"}


def run_sample(capsys, ws, argv) -> int:
    argv = [str(a).format(**ws) for a in argv]
    if "--save-path" not in argv:
        argv += ["--save-path", str(ws["out"])]
    capsys.readouterr()
    return sample.main(argv)


# --- 1. tracebacks instead of one line; 2. impossible values accepted; 4. flags used or refused ---

FLAGS = [
    # devices
    ("device-bogus", ["--device", "bogus"], ["--device 'bogus' is not a device"]),
    ("device-index", [*TINY, "--prompt", "x", "--device", "cpu:0x"], ["--device"]),
    ("device-missing-accelerator", ["--device", "cuda:99"], ["--device 'cuda:99'"]),
    ("device-meta", ["--device", "meta"], ["meta device holds no data"]),
    # non-finite and out-of-range numbers
    ("flow-shift-nan", ["--flow-shift", "nan"], ["--flow-shift", "'nan' is not a finite number"]),
    ("flow-shift-inf", ["--flow-shift", "inf"], ["--flow-shift", "not a finite number"]),
    ("flow-shift-negative", ["--flow-shift", "-1"], ["flow shift must be > 0"]),
    ("flow-shift-huge", ["--flow-shift", "1e9"], ["flow shift must be > 0 and <= 1000"]),
    ("embedded-nan", ["--embedded-cfg-scale", "nan"], ["--embedded-cfg-scale", "not a finite number"]),
    ("cfg-inf", ["--cfg-scale=-inf"], ["--cfg-scale", "not a finite number"]),
    ("cfg-huge", ["--cfg-scale", "101"], ["cfg scale must be >= 0 and <= 100, got 101"]),
    ("cache-threshold-nan", ["--cache", "teacache", "--cache-threshold", "nan"], ["--cache-threshold", "finite"]),
    ("cache-threshold-negative", ["--cache", "first-block", "--cache-threshold", "-1"],
     ["--cache-threshold", "must be a finite number >= 0"]),
    ("lora-scale-nan", ["--lora", "{lora}:nan"], ["--lora", "scale nan is not a finite number"]),
    ("lora-scale-inf", ["--lora", "{lora}:1e999"], ["--lora", "scale inf is not a finite number"]),
    ("rewrite-timeout-nan", ["--rewrite", "normal", "--rewrite-endpoint", "http://x", "--rewrite-timeout", "nan"],
     ["--rewrite-timeout", "finite"]),
    # whole numbers: type exact, range checked
    ("text-len-negative", ["--text-len", "-5"], ["--text-len", "text len must be a positive integer, got -5"]),
    ("text-len-zero", ["--text-len", "0"], ["--text-len", "got 0"]),
    ("text-len-2-too-long", ["--text-len-2", "100"], ["--text-len-2", "at most 77"]),
    ("skip-layer-negative", ["--hidden-state-skip-layer", "-1"], ["--hidden-state-skip-layer", "must be >= 0"]),
    ("blocks-zero", ["--offload", "blocks", "--blocks-on-device", "0"], ["--blocks-on-device", "got 0"]),
    ("seed-overflow", ["--seed", str(2**64)], ["--seed", "at most 9223372036854775807"]),
    ("seed-overflow-videos", ["--seed", str(2**63 - 1), "--num-videos", "2"], ["--seed", "at most"]),
    ("seed-negative", ["--seed", "-1"], ["--seed", "must be >= 0"]),
    ("seed-float", ["--seed", "1.5"], ["--seed", "invalid whole number '1.5'"]),
    ("seed-bool", ["--seed", "true"], ["--seed", "invalid whole number 'true'"]),
    ("frames-float", ["--video-length", "33.0"], ["--video-length", "invalid whole number"]),
    ("frames-zero", ["--video-length", "0"], ["--video-length", "got 0"]),
    ("frames-not-4n1", ["--video-length", "30"], ["video length 30 is not 4n+1; use 29 or 33"]),
    ("size-zero", ["--video-size", "0", "1280"], ["--video-size", "height must be a positive integer"]),
    ("size-huge", ["--video-size", "99984", "16"], ["--video-size", "height must be at most 16384"]),
    ("size-text", ["--video-size", "720", "wide"], ["--video-size", "invalid whole number 'wide'"]),
    ("steps-zero", ["--infer-steps", "0"], ["infer steps must be a positive integer"]),
    ("steps-float", ["--infer-steps", "2.5"], ["--infer-steps", "invalid whole number '2.5'"]),
    ("videos-zero", ["--num-videos", "0"], ["--num-videos", "positive integer"]),
    ("degree-zero", ["--ulysses-degree", "0"], ["--ulysses-degree 0: a degree is a process count"]),
    ("degree-huge", ["--ring-degree", "5000"], ["--ring-degree 5000"]),
    ("degree-without-torchrun", ["--ulysses-degree", "2"], ["launch with torchrun --nproc_per_node=2"]),
    # flags that would be ignored are refused
    ("threshold-without-cache", ["--cache-threshold", "0.1"], ["--cache-threshold has no effect without --cache"]),
    ("blocks-without-offload", ["--blocks-on-device", "3"], ["--blocks-on-device has no effect without --offload blocks"]),
    ("compile-mode-without-compile", ["--compile-mode", "max-autotune"], ["--compile-mode has no effect without --compile"]),
    ("activation-scale-without-matmul", ["--fp8-activation-scale", "tensor"], ["--fp8-activation-scale has no effect"]),
    ("lora-fuse-without-lora", ["--no-lora-fuse"], ["--lora-fuse has no effect without --lora"]),
    ("rewrite-flag-without-rewrite", ["--rewrite-retries", "3"], ["--rewrite-retries has no effect without --rewrite"]),
    ("rewrite-endpoint-without-rewrite", ["--rewrite-endpoint", "http://x"], ["--rewrite-endpoint needs --rewrite"]),
    ("rewrite-without-source", ["--rewrite", "normal"], ["--rewrite needs exactly one of --rewrite-endpoint"]),
    ("rewrite-model-path-file", ["--rewrite", "normal", "--rewrite-model-path", "{file}"], ["is not a folder"]),
    ("tiny-dit-weight", [*TINY, "--dit-weight", "{file}"], ["--dit-weight cannot be used with --model tiny-random"]),
    ("tiny-fp8", [*TINY, "--use-fp8"], ["--use-fp8 cannot be used with --model tiny-random"]),
    ("tiny-precision", [*TINY, "--precision", "fp16"], ["--precision cannot be used with --model tiny-random"]),
    ("tiny-model-base", [*TINY, "--model-base", "ckpts"], ["--model-base cannot be used with --model tiny-random"]),
    ("tiny-text-len", [*TINY, "--text-len", "128"], ["--text-len cannot be used with --model tiny-random"]),
    ("tiny-load-key", [*TINY, "--load-key", "ema"], ["--load-key cannot be used with --model tiny-random"]),
    ("neg-prompt-without-guidance", [*TINY, "--neg-prompt", "blur"], ["--neg-prompt is used only with real guidance"]),
    ("embedded-without-embedding", ["--model", "HYVideo-T/2", "--embedded-cfg-scale", "3"],
     ["--embedded-cfg-scale: model HYVideo-T/2 has no guidance embedding"]),
    ("seed-type-random-with-seed", ["--seed-type", "random", "--seed", "3"], ["--seed-type random", "ignores --seed"]),
    ("seed-type-fixed-videos", ["--seed-type", "fixed", "--num-videos", "2"], ["--seed-type fixed"]),
    ("batch-over-videos", ["--batch-size", "4"], ["--batch-size 4 is more than --num-videos 1"]),
    ("resume-without-file", ["--resume"], ["--resume works on the rows of --prompt-file"]),
    ("ids-without-file", ["--prompt-ids", "1"], ["--prompt-ids works on the rows of --prompt-file"]),
    ("fixed-architecture-flag", ["--latent-channels", "32"], ["--latent-channels '32'", "only has '16'"]),
    ("size-and-preset", ["--resolution", "720p-16:9", "--video-size", "64", "64"], ["either --video-size or --resolution"]),
    ("contradicting-offload", ["--use-cpu-offload", "--offload", "blocks"], ["--use-cpu-offload means --offload model"]),
    ("compile-with-block-offload", ["--compile", "--offload", "blocks"], ["--compile cannot be combined"]),
    ("fp8-matmul-without-fp8", ["--fp8-matmul"], ["--fp8-matmul needs --use-fp8"]),
    ("unknown-flag", ["--infer-stepz", "3"], ["unrecognized arguments: --infer-stepz", "--help"]),
    ("bad-choice", ["--attention", "fastest"], ["--attention", "invalid choice"]),
    ("unknown-model", ["--model", "HYVideo-XL"], ["unknown model 'HYVideo-XL'; choose one of"]),
    # prompts
    ("prompt-empty", ["--prompt", "  "], ["the prompt is empty"], False),
    ("prompt-huge", ["--prompt", "x" * 20_001], ["has 20,001 characters; at most 20,000"], False),
    ("prompt-undecodable", ["--prompt", "caf\udce9"], ["not valid UTF-8 text"], False),
    ("prompt-and-file", ["--prompt-file", "{file}"], ["give either --prompt"]),
    ("no-prompt", [], ["give either --prompt"], False),
    # output folder
    ("save-path-is-file", ["--save-path", "{file}"], ["--save-path", "is a file, not a folder"]),
    ("save-path-forbidden", ["--save-path", "/proc/forbidden"], ["cannot create --save-path /proc/forbidden"]),
]


@pytest.mark.parametrize("case", FLAGS, ids=[c[0] for c in FLAGS])
def test_flags(capsys, ws, case):
    _, argv, needles, *with_prompt = case
    prompt = ["--prompt", "a cat"] if (with_prompt or [True])[0] else []
    code = run_sample(capsys, ws, [*prompt, *argv])
    assert_one_line(code, capsys, *needles)
    assert nothing_written(ws["out"])


# --- 3. batch files: exact types, line numbers, rows never lost -----------------------------------

PROMPT_FILES = [
    ("jsonl-seed-float", "p.jsonl", '{"prompt": "a", "seed": 1.7}\n', ["p.jsonl line 1", "seed must be a whole number, got 1.7"]),
    ("jsonl-seed-bool", "p.jsonl", '{"prompt": "a", "seed": true}\n', ["line 1", "seed must be a whole number, got True"]),
    ("jsonl-seed-text", "p.jsonl", '{"prompt": "a", "seed": "12"}\n', ["line 1", "got '12'"]),
    ("jsonl-seed-nan", "p.jsonl", '{"prompt": "a", "seed": NaN}\n', ["line 1", "NaN is not a JSON number"]),
    ("jsonl-seed-huge", "p.jsonl", '{"prompt": "a", "seed": 1e30}\n', ["line 1", "seed must be a whole number"]),
    ("jsonl-seed-overflow", "p.jsonl", '{"prompt": "a", "seed": 18446744073709551616}\n', ["line 1", "at most"]),
    ("jsonl-seed-digits", "p.jsonl", '{"prompt": "a", "seed": ' + "9" * 5000 + "}\n", ["line 1", "not valid JSON"]),
    ("jsonl-negative-number", "p.jsonl", '{"prompt": "a", "negative_prompt": 5}\n', ["line 1", "negative prompt must be text, got int"]),
    ("jsonl-negative-unused", "p.jsonl", '{"prompt": "a", "negative_prompt": "blur"}\n',
     ["p.jsonl line 1: the negative prompt is used only with real guidance"]),
    ("jsonl-prompt-number", "p.jsonl", '{"prompt": 5}\n', ["line 1", "prompt must be text, got int"]),
    ("jsonl-prompt-missing", "p.jsonl", '{"seed": 1}\n', ["line 1", "empty or missing prompt"]),
    ("jsonl-prompt-nul", "p.jsonl", '{"prompt": "a\\u0000b"}\n', ["line 1", "not valid UTF-8 text"]),
    ("jsonl-id-float", "p.jsonl", '{"prompt": "a", "id": 1.5}\n', ["line 1", "id must be text or a whole number, got 1.5"]),
    ("jsonl-id-bool", "p.jsonl", '{"prompt": "a", "id": true}\n', ["line 1", "got True"]),
    ("jsonl-id-list", "p.jsonl", '{"prompt": "a", "id": [1]}\n', ["line 1", "got [1]"]),
    ("jsonl-id-path", "p.jsonl", '{"prompt": "a", "id": "../../escape"}\n', ["line 1", "cannot be part of a file name"]),
    ("jsonl-id-hidden", "p.jsonl", '{"prompt": "a", "id": ".manifest"}\n', ["line 1", "cannot be part of a file name"]),
    ("jsonl-id-duplicate", "p.jsonl", '{"prompt": "a", "id": 1}\n{"prompt": "b", "id": "1"}\n', ["line 2", "duplicate id '1'"]),
    ("jsonl-unknown-field", "p.jsonl", '{"prompt": "a", "promt": "b"}\n', ["line 1", "unknown field 'promt'"]),
    ("jsonl-repeated-key", "p.jsonl", '{"prompt": "a", "prompt": "b"}\n', ["line 1", "the field 'prompt' is given twice"]),
    ("jsonl-deep", "p.jsonl", "[" * 100_000 + "\n", ["line 1", "not valid JSON"]),
    ("jsonl-not-object", "p.jsonl", '["a"]\n', ["line 1", "expected a JSON object"]),
    ("jsonl-broken", "p.jsonl", '{"prompt": "a"}\n{oops\n', ["line 2", "not valid JSON"]),
    ("txt-not-utf8", "p.txt", b"first\nsecond \xff\n", ["p.txt line 2", "not UTF-8 text (byte 0xff)"]),
    ("txt-nul", "p.txt", b"first\nsec\x00ond\n", ["p.txt line 2", "holds a NUL byte"]),
    ("txt-empty", "p.txt", "\n \n", ["no prompts in the file"]),
    ("txt-seed-overflow", "p.txt", "a\nb\n", ["p.txt line 2", "outside 0 to"]),
    ("csv-unterminated-at-end", "p.csv", ',prompt\n0,"a cat\n1,a dog\n2,a bird\n', ["p.csv line 2", "malformed CSV"]),
    ("csv-unterminated-swallows", "p.csv", ',prompt\n0,"a cat\n1,a dog\n2,a bird"\n3,a fish\n',
     ["p.csv line 2", "looks like row 1", "a quote is not closed"]),
    ("csv-stray-quote", "p.csv", ',prompt\n0,"a "cat"\n', ["p.csv line 2", "malformed CSV"]),
    ("csv-extra-field", "p.csv", ",prompt\n0,a cat, with a hat\n", ["p.csv line 2", "3 fields but the header has 2"]),
    ("csv-no-prompt-column", "p.csv", "text\nhello\n", ["the CSV header has no 'prompt' column"]),
    ("csv-unknown-column", "p.csv", "prompt,sed\na,1\n", ["unknown CSV column 'sed'"]),
    ("csv-repeated-column", "p.csv", "prompt,prompt\na,b\n", ["names the column 'prompt' twice"]),
    ("csv-seed-underscore", "p.csv", "prompt,seed\na,1_000\n", ["p.csv line 2", "seed '1_000' is not a whole number"]),
    ("csv-duplicate-id", "p.csv", ",prompt\n0,a\n0,b\n", ["p.csv line 3", "duplicate id '0'"]),
    ("csv-empty", "p.csv", "", ["the file is empty"]),
    ("file-is-folder", "folder.csv/", "", ["is a folder"]),
    ("file-type", "p.md", "a\n", ["unsupported prompt file type '.md'"]),
    ("file-missing", None, "", ["prompt file not found"]),
]


@pytest.mark.parametrize("case", PROMPT_FILES, ids=[c[0] for c in PROMPT_FILES])
def test_prompt_files(capsys, ws, case):
    name, filename, content, needles = case
    path = ws["tmp"] / (filename or "missing.txt")
    if filename and filename.endswith("/"):
        path.mkdir()
    elif filename:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    seed = ["--seed", str(2**63 - 2)] if name == "txt-seed-overflow" else []
    code = run_sample(capsys, ws, [*SMALL, "--prompt-file", path, *seed])
    assert_one_line(code, capsys, *needles)
    assert nothing_written(ws["out"])


def test_prompt_file_larger_than_any_prompt_file_is_refused_unread(capsys, ws):
    huge = ws["tmp"] / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(65 * 2**20)  # sparse: nothing is written to disk
    assert_one_line(run_sample(capsys, ws, [*SMALL, "--prompt-file", huge]), capsys, "too large for a prompt file")


@pytest.mark.parametrize("spec, needle", [("5-1", "runs backwards"), ("1,,2", "empty entry"),
                                          ("42", "no such id"), ("0-99999999999", "larger than any prompt file")])
def test_prompt_ids(capsys, ws, spec, needle):
    prompts = ws["tmp"] / "p.txt"
    prompts.write_text("a\nb\n")
    assert_one_line(run_sample(capsys, ws, [*SMALL, "--prompt-file", prompts, "--prompt-ids", spec]), capsys,
                    f"--prompt-ids {spec!r}", needle)


def test_csv_with_byte_order_mark_and_unicode_separators_loses_nothing(tmp_path):
    """What spreadsheets save (a BOM) is read; a U+2028 inside a prompt neither splits it nor
    shifts the line numbers after it."""
    from hyvideo.apps.batch import read_prompt_file

    csv = tmp_path / "p.csv"
    csv.write_bytes("\ufeff,prompt\n0,\"multi\nline\"\n1,b\n".encode("utf-8"))
    assert [(j.id, j.prompt, j.seed) for j in read_prompt_file(csv, 10)] == [("0", "multi\nline", 10), ("1", "b", 11)]
    txt = tmp_path / "p.txt"
    txt.write_bytes("\ufeffone\u2028two\nthree\n".encode("utf-8"))
    assert [(j.id, j.prompt) for j in read_prompt_file(txt, 0)] == [("1", "one\u2028two"), ("2", "three")]


# --- 5. checkpoints: the file, the value and what is valid; 6. before anything heavy ---------------

def test_missing_model_folder(capsys, ws):
    code = run_sample(capsys, ws, ["--prompt", "a", "--model-base", "{tmp}/nothing"])
    assert_one_line(code, capsys, "model folder", "nothing not found: download the official files")


@pytest.mark.parametrize("flag, target, needle", [
    ("--model-base", "{file}", "is a file; give a folder"),
    ("--dit-weight", "{tmp}", "is a folder; give the weights file"),
    ("--vae-path", "{file}", "is a file; give a folder"),
    ("--text-encoder-path", "{file}", "is a file; give a folder"),
    ("--text-encoder-2-path", "{file}", "is a file; give a folder"),
])
def test_a_file_for_a_folder_and_the_reverse(capsys, ws, flag, target, needle):
    code = run_sample(capsys, ws, ["--prompt", "a", "--model-base", "{ckpts}", flag, target])
    assert_one_line(code, capsys, flag, needle)


def test_missing_component_and_fp8_file(capsys, ws):
    (ws["ckpts"] / "text_encoder_2").rmdir()
    assert_one_line(run_sample(capsys, ws, ["--prompt", "a", "--model-base", "{ckpts}"]), capsys,
                    "missing text encoder 2 at")
    (ws["ckpts"] / "text_encoder_2").mkdir()
    assert_one_line(run_sample(capsys, ws, ["--prompt", "a", "--model-base", "{ckpts}", "--use-fp8"]), capsys,
                    "missing dit at", "_fp8.pt")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def _saved(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, needles", [
    ("truncated", lambda: _saved({"module": {"w": torch.zeros(1000)}})[:300], ["cannot read checkpoint", "zip archive"]),
    ("empty", lambda: b"", ["cannot read checkpoint", "the file is empty"]),
    ("pickle-with-code", lambda: _saved({"module": Evil()}), ["refusing to load", "not a plain tensor checkpoint"]),
    ("a-list", lambda: _saved([torch.zeros(1)]), ["holds a list, not a state dict"]),
    ("no-container", lambda: _saved({"weights": {"w": torch.zeros(1)}, "step": 3}), ["none of the container keys"]),
    ("wrong-keys", lambda: None, ["does not match HYVideoDiffusionTransformer", "missing keys"]),
])
def test_unusable_dit_checkpoints_are_named(capsys, tmp_path, name, content, needles):
    ckpts = fake_ckpts(tmp_path / "ckpts", content())
    code = sample.main(["--prompt", "a", "--model-base", str(ckpts), "--save-path", str(tmp_path / "out")])
    line = assert_one_line(code, capsys, *needles)
    assert "mp_rank_00_model_states.pt" in line and "this must never run" not in capsys.readouterr().out
    assert nothing_written(tmp_path / "out")


@pytest.fixture(scope="module")
def tiny_dit():
    from hyvideo.dit.loader import build_dit
    from hyvideo.pipeline.variants import load_variant

    config = load_variant("tiny-random").dit
    return config, build_dit(config, dtype=torch.float32, device="cpu")


def test_integer_typed_dit_weights_are_refused_with_the_file(tmp_path, tiny_dit):
    from safetensors.torch import save_file

    from hyvideo.checkpoints.reading import CheckpointError
    from hyvideo.dit.loader import load_dit

    config, dit = tiny_dit
    path = tmp_path / "int_dit.safetensors"
    save_file({k: v.to(torch.int32) for k, v in dit.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="int_dit.safetensors: .* tensors are not floating point"):
        load_dit(path, config, dtype=torch.float32)


@pytest.mark.parametrize("text, needle", [
    ('{"in_channels": 3,', "cannot parse"), ('{"scale": NaN}', "NaN is not a JSON number"),
    ("[1, 2]", "holds a JSON list"), (None, "is a folder"), (b"\xff\xfe{", "not UTF-8 text"),
])
def test_json_files_are_named_when_unreadable(tmp_path, text, needle):
    from hyvideo.checkpoints.reading import CheckpointError
    from hyvideo.vae.config import VAEConfig

    path = tmp_path / "vae" / "config.json"
    path.parent.mkdir()
    path.mkdir() if text is None else path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=needle) as failure:
        VAEConfig.from_json(path)
    assert str(path) in str(failure.value) and "\n" not in str(failure.value)


def test_diffusers_config_json_parse_error_names_the_file(capsys, tmp_path):
    base = tmp_path / "hf"
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        (base / name).mkdir(parents=True)
    (base / "model_index.json").write_text("{}")
    (base / "transformer" / "config.json").write_text('{"num_layers": ')
    code = sample.main(["--prompt", "a", "--model-base", str(base), "--save-path", str(tmp_path / "out")])
    assert_one_line(code, capsys, "config.json")


def test_safetensors_garbage_and_empty_reason(tmp_path):
    from hyvideo.checkpoints.reading import CheckpointError, read_checkpoint

    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match=r"cannot read safetensors file .*w.safetensors: \S"):
        read_checkpoint(bad)
    cut = tmp_path / "legacy.pt"
    cut.write_bytes(b"\x80\x02}q")  # a pickle stream that ends early
    with pytest.raises(CheckpointError) as failure:
        read_checkpoint(cut)
    assert not str(failure.value).rstrip().endswith(":") and "legacy.pt" in str(failure.value)


# --- LoRA and FP8 files ---------------------------------------------------------------------------

def _lora_pair(rank: int = 2, inputs: int = 64, outputs: int = 192) -> dict:
    return {"double_blocks.0.img_attn_qkv.lora_A.weight": torch.zeros(rank, inputs),
            "double_blocks.0.img_attn_qkv.lora_B.weight": torch.zeros(outputs, rank)}


def _save(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("name, make, needle", [
    ("alpha-shape", lambda p: _save(p / "l.safetensors", {**_lora_pair(), "double_blocks.0.img_attn_qkv.alpha":
                                                          torch.ones(2)}), "alpha has shape (2,); an alpha is one number"),
    ("alpha-nan", lambda p: _save(p / "l.safetensors", {**_lora_pair(), "double_blocks.0.img_attn_qkv.alpha":
                                                        torch.tensor(float("nan"))}), "alpha is nan, not a finite number"),
    ("nan-weights", lambda p: _save(p / "l.safetensors", {k: v + float("nan") for k, v in _lora_pair().items()}),
     "holds NaN or infinite values"),
    ("wrong-shape", lambda p: _save(p / "l.safetensors", _lora_pair(inputs=65)), "takes 64 inputs"),
    ("not-a-pair", lambda p: _save(p / "l.safetensors", {**_lora_pair(), "double_blocks.0.img_attn_qkv.lora_B.weight":
                                                         torch.zeros(3)}), "not a linear LoRA pair"),
    ("no-match", lambda p: _save(p / "l.safetensors", {"unet.down.lora_A.weight": torch.zeros(2, 2)}),
     "none of its 1 keys matches a layer of the DiT"),
    ("text-file", lambda p: (p / "l.safetensors").write_text("hello") and p / "l.safetensors", "cannot read safetensors file"),
    ("peft-bad-json", lambda p: _peft(p, '{"r": 4, "lora_alpha": '), "adapter_config.json"),
    ("peft-alpha-text", lambda p: _peft(p, '{"r": 4, "lora_alpha": "big"}'), "lora_alpha must be a positive number"),
    ("peft-rank-zero", lambda p: _peft(p, '{"r": 0, "lora_alpha": 4}'), "r must be a positive number, got 0"),
    ("peft-empty-folder", lambda p: (p / "peft").mkdir() or p / "peft", "expected one adapter_model.safetensors"),
])
def test_bad_lora_files_are_named(tmp_path, tiny_dit, name, make, needle):
    from hyvideo.checkpoints.reading import CheckpointError
    from hyvideo.dit.lora import LoraSpec, apply_loras

    _, dit = tiny_dit
    path = make(tmp_path)
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    with pytest.raises(CheckpointError, match=re.escape(needle)) as failure:
        apply_loras(dit, [LoraSpec(path)], fuse=True)
    assert "\n" not in str(failure.value)
    assert all(torch.equal(before[k], v) for k, v in dit.state_dict().items())  # the model is untouched


def _peft(root: Path, config: str) -> Path:
    folder = root / "peft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(config)
    _save(folder / "adapter_model.safetensors", {"transformer." + k: v for k, v in _lora_pair().items()})
    return folder


def test_a_bad_lora_through_the_cli_is_one_line(capsys, ws):
    _save(ws["lora"], {**_lora_pair(), "double_blocks.0.img_attn_qkv.alpha": torch.ones(2, 2)})
    code = run_sample(capsys, ws, [*SMALL, "--prompt", "a", "--lora", "{lora}:0.5"])
    assert_one_line(code, capsys, "lora", "alpha has shape (2, 2)")
    assert nothing_written(ws["out"])


@pytest.mark.parametrize("scale, needle", [(float("nan"), "nan"), (0.0, "finite number > 0"),
                                          (-1.0, "finite number > 0"), ("x", "expected a tensor")])
def test_fp8_scale_maps_with_impossible_scales(tiny_dit, scale, needle):
    from hyvideo.checkpoints.reading import CheckpointError
    from hyvideo.dit.fp8 import FP8Linear, set_fp8_scales
    from hyvideo.dit.loader import build_dit

    config, _ = tiny_dit
    model = build_dit(config, dtype=torch.float32, device="meta", fp8=True)
    names = [n for n, m in model.named_modules() if isinstance(m, FP8Linear)]
    scales = {n: torch.tensor(1.0) for n in names}
    scales[names[0]] = scale if isinstance(scale, str) else torch.tensor(scale)
    with pytest.raises(CheckpointError, match=needle):
        set_fp8_scales(model, scales, source="map.pt")


# --- crashes, kills and interrupts: nothing lost, nothing duplicated -----------------------------

def _batch(capsys, tmp_path, *extra, prompts: int = 2) -> tuple[int, Path]:
    file = tmp_path / "p.txt"
    if not file.exists():
        file.write_text("".join(f"prompt {i}\n" for i in range(prompts)))
    out = tmp_path / "out"
    capsys.readouterr()
    return sample.main([*SMALL, "--prompt-file", str(file), "--seed", "0", "--save-path", str(out), *extra]), out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().split("\n") if line]


def test_a_torn_last_record_is_set_aside_and_its_video_not_rendered_again(capsys, tmp_path):
    code, out = _batch(capsys, tmp_path)
    assert code == 0
    manifest = out / "manifest.jsonl"
    whole = manifest.read_bytes()
    manifest.write_bytes(whole[:-40])  # a power loss in the middle of the last record
    code, _ = _batch(capsys, tmp_path, "--resume")
    assert code == 0
    records = _records(out)  # every line parses again
    assert sorted(r["id"] for r in records) == ["1", "2"] and records[-1]["recovered"]
    assert len(list(out.glob("*.safetensors"))) == 2  # the finished video was not rendered twice
    assert (out / "manifest.jsonl.torn").read_bytes() == whole[:-40].split(b"\n")[-1] + b"\n"


def test_a_whole_record_without_its_newline_is_kept(capsys, tmp_path):
    code, out = _batch(capsys, tmp_path)
    manifest = out / "manifest.jsonl"
    manifest.write_bytes(manifest.read_bytes().rstrip(b"\n"))
    code, _ = _batch(capsys, tmp_path, "--resume")
    assert code == 0 and "nothing to do" in capsys.readouterr().err
    assert [r["id"] for r in _records(out)] == ["1", "2"] and not (out / "manifest.jsonl.torn").exists()


def test_a_video_finished_but_not_recorded_is_recorded_not_redone(capsys, tmp_path):
    """A kill between the file and its manifest line."""
    code, out = _batch(capsys, tmp_path)
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text().split("\n")[0] + "\n")
    (out / ".2_seed2_prompt_1.abc.partial").write_bytes(b"half a file")  # a kill mid-write leaves these
    code, _ = _batch(capsys, tmp_path, "--resume")
    assert code == 0
    assert sorted(r["id"] for r in _records(out)) == ["1", "2"]
    assert len(list(out.glob("*.safetensors"))) == 2 and not list(out.glob(".*partial"))


def test_a_lost_record_is_recovered_even_when_the_resume_draws_other_seeds(capsys, tmp_path):
    code, out = _batch(capsys, tmp_path)
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text().split("\n")[0] + "\n")
    capsys.readouterr()
    code = sample.main([*SMALL, "--prompt-file", str(tmp_path / "p.txt"), "--save-path", str(out), "--resume"])
    assert code == 0  # no --seed: a random base seed, so the file names differ from the first run's
    assert sorted(r["id"] for r in _records(out)) == ["1", "2"] and len(list(out.glob("*.safetensors"))) == 2


def test_resume_after_the_folder_moved_and_a_garbage_line(capsys, tmp_path, caplog):
    code, out = _batch(capsys, tmp_path, prompts=3)
    moved = tmp_path / "moved"
    out.rename(moved)
    with open(moved / "manifest.jsonl", "a") as f:
        f.write("garbage that is not a record\n")
    file = tmp_path / "p.txt"
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        code = sample.main([*SMALL, "--prompt-file", str(file), "--seed", "0", "--save-path", str(moved), "--resume"])
    assert code == 0 and "nothing to do" in capsys.readouterr().err  # records found by name beside the manifest
    assert "not records and are ignored" in caplog.text


def test_several_videos_per_prompt_cut_between_them_are_completed_not_duplicated(capsys, tmp_path):
    code, out = _batch(capsys, tmp_path, "--num-videos", "2", prompts=1)
    assert code == 0
    manifest = out / "manifest.jsonl"
    first, second = manifest.read_text().split("\n")[:2]
    Path(json.loads(second)["output"]).unlink()
    manifest.write_text(first + "\n")
    code, _ = _batch(capsys, tmp_path, "--num-videos", "2", "--resume")
    assert code == 0
    assert sorted(r["id"] for r in _records(out)) == ["1.0", "1.1"]
    assert len(list(out.glob("*.safetensors"))) == 2


def test_an_interrupt_while_writing_leaves_no_partial_file_and_no_record(capsys, tmp_path, monkeypatch):
    import safetensors.torch

    def interrupted(*args, **kwargs):
        Path(args[1]).write_bytes(b"half")  # the temporary file exists when the interrupt comes
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    code, out = _batch(capsys, tmp_path)
    assert_one_line(code, capsys, "interrupted; finished videos are saved")
    assert not list(out.glob("*.safetensors")) and not list(out.glob(".*partial"))
    assert (out / "manifest.jsonl").read_text() == ""  # created at the start, nothing false in it


def test_a_full_disk_while_writing_is_one_line_and_leaves_no_partial_file(capsys, tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    def full(*args, **kwargs):
        Path(args[1]).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", args[1])

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, out = _batch(capsys, tmp_path)
    assert_one_line(code, capsys, "No space left on device")
    assert not list(out.glob("*.safetensors")) and not list(out.glob(".*partial"))


@pytest.mark.parametrize("error, needle", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 1 TB"),
     "out of memory while generating"),
    (MemoryError(), "out of memory while generating"),
    (KeyboardInterrupt(), "interrupted"),
])
def test_failures_while_generating_are_one_line(capsys, ws, monkeypatch, error, needle):
    from hyvideo.pipeline.t2v import HunyuanVideoPipeline

    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(HunyuanVideoPipeline, "__call__", fail)
    assert_one_line(run_sample(capsys, ws, [*SMALL, "--prompt", "a"]), capsys, needle)
    assert nothing_written(ws["out"])


def test_existing_files_are_never_overwritten(tmp_path):
    from hyvideo.apps.video_io import write_latents

    target = tmp_path / "a.safetensors"
    target.write_bytes(b"precious")
    written = write_latents(torch.zeros(1, 16, 1, 2, 2), target, {"x": 1})
    assert written != target and target.read_bytes() == b"precious"


def test_metadata_is_strict_json_whatever_the_values(tmp_path):
    from safetensors import safe_open

    from hyvideo.apps.video_io import to_json, write_latents

    meta = {"shift": float("nan"), "peak": float("inf"), "path": tmp_path, "t": torch.tensor(2.5), "dims": (1, 2)}
    assert json.loads(to_json(meta)) == {"shift": None, "peak": None, "path": str(tmp_path), "t": 2.5, "dims": [1, 2]}
    path = write_latents(torch.zeros(1, 16, 1, 2, 2), tmp_path / "l.safetensors", meta)
    with safe_open(str(path), "pt") as f:
        text = f.metadata()["settings"]
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the metadata"))


# --- 7. the conformance runner ----------------------------------------------------------------------

def _good_case(folder: Path) -> None:
    from safetensors.torch import save_file

    from hyvideo.pipeline.scheduler import FlowMatchSchedule

    folder.mkdir(parents=True)
    schedule = FlowMatchSchedule.create(4, 7.0, True)
    (folder / "case.json").write_text(json.dumps({
        "kind": "scheduler", "name": "good", "config": {"shift": 7.0, "reverse": True},
        "settings": {"num_inference_steps": 4, "step_indices": []}, "outputs": ["timesteps", "sigmas"],
        "tolerance": {"atol": 1e-6, "rtol": 1e-6}}))
    save_file({"timesteps": schedule.timesteps.contiguous(), "sigmas": schedule.sigmas.contiguous()},
              str(folder / "tensors.safetensors"))


BROKEN_CASES = {
    "cut-off": ('{"kind": "scheduler", "name": "cu', "case.json is not valid JSON", "cut off"),
    "no-kind": ('{"name": "x", "outputs": []}', "case.json has no 'kind'"),
    "a-list": ("[1, 2]", "case.json holds a JSON list"),
    "bad-tolerance": ('{"kind": "scheduler", "tolerance": {"atol": "loose"}}', "'tolerance' must map"),
    "bad-outputs": ('{"kind": "scheduler", "outputs": "sigmas"}', "'outputs' must be a list"),
    "unknown-kind": ('{"kind": "teleport"}', "kind 'teleport' not implemented"),
    "missing-tensors": (('{"kind": "scheduler", "config": {"shift": 7.0, "reverse": true}, "settings": '
                         '{"num_inference_steps": 4, "step_indices": []}, "outputs": ["sigmas"]}'),
                        "expected output 'sigmas' is not in tensors.safetensors"),
}


@pytest.mark.parametrize("name", list(BROKEN_CASES))
def test_a_broken_case_is_one_fail_line_and_the_others_still_run(capsys, tmp_path, name):
    from hyvideo.conformance.__main__ import main

    text, *needles = BROKEN_CASES[name]
    _good_case(tmp_path / "a_good")
    (tmp_path / name).mkdir()
    (tmp_path / name / "case.json").write_text(text)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "dit_x.json").write_text("not json at all")
    code = main([str(tmp_path)])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert code == 1 and "Traceback" not in out + err
    assert lines[-1] == "1 passed, 2 failed", out
    broken = [line for line in lines if name in line]
    assert len(broken) == 1 and broken[0].startswith("FAIL") and all(n in broken[0] for n in needles), out
    assert any(line.startswith("PASS scheduler good") for line in lines)
    assert any(line.startswith("FAIL manifest dit_x") and "not valid JSON" in line for line in lines)


@pytest.mark.parametrize("argv, needle", [(["{tmp}/nothing"], "no such file or folder"),
                                          (["{tmp}", "--device", "bogus"], "--device 'bogus' is not a device"),
                                          (["{tmp}", "--attention", "x"], "invalid choice"),
                                          (["{tmp}", "--kind", "dits"], "--kind dits: no such kind")])
def test_conformance_runner_arguments(capsys, tmp_path, argv, needle):
    from hyvideo.conformance.__main__ import main

    _good_case(tmp_path / "a_good")
    assert_one_line(main([a.format(tmp=tmp_path) for a in argv]), capsys, needle)


# --- the web API (gradio_client /generate and the page call the same handler) --------------------

@pytest.fixture
def handler(tmp_path):
    gr = pytest.importorskip("gradio")
    from hyvideo.apps import webui
    from hyvideo.pipeline.variants import load_variant

    variant = load_variant("tiny-random")

    class Pipeline:  # the request side of the tiny pipeline; generation is never reached
        name, device, defaults, geometry = "tiny", torch.device("cpu"), variant.sampling, variant.geometry

        def request(self, prompt, **fields):
            return variant.request(prompt=prompt, **fields)

        def __call__(self, *args, **kwargs):
            raise AssertionError("an invalid request reached the model")

    gen = webui.Generator(Pipeline(), tmp_path / "web", webui.Limits(max_pixels=128 * 192, max_frames=33, max_steps=50))
    generate = webui.make_generate(gen)

    def call(**changes):
        form = {"prompt": "a cat", "negative_prompt": "", "resolution": "custom", "height": 32, "width": 48,
                "video_length": 5, "infer_steps": 2, "seed": 1, "random_seed": False, "embedded_cfg_scale": 6.0,
                "cfg_scale": 1.0, "flow_shift": 7.0}
        form.update(changes)
        with pytest.raises(gr.Error) as failure:
            generate(*form.values(), [], None, lambda *a, **k: None)
        return failure.value.message

    call.generator = gen
    return call


WEB = [
    ({"height": "abc"}, "height must be a number, got 'abc'"),
    ({"height": 32.5}, "height must be a whole number, got 32.5"),
    ({"width": [48]}, "width must be a number, got [48]"),
    ({"video_length": float("nan")}, "video length must be a finite number, got nan"),
    ({"video_length": float("inf")}, "video length must be a finite number"),
    ({"infer_steps": True}, "infer steps must be a number, got True"),
    ({"infer_steps": "2"}, "infer steps must be a number, got '2'"),
    ({"seed": "7"}, "seed must be a number, got '7'"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"seed": 2**70}, "seed 1180591620717411303424 is too large"),
    ({"cfg_scale": "x"}, "cfg scale must be a number, got 'x'"),
    ({"cfg_scale": 1e9}, "cfg scale must be >= 0 and <= 100"),
    ({"flow_shift": float("nan")}, "flow shift must be a finite number"),
    ({"embedded_cfg_scale": {"a": 1}}, "embedded cfg scale must be a number"),
    ({"random_seed": "yes"}, "random seed must be true or false, got 'yes'"),
    ({"resolution": "8k"}, "unknown resolution '8k'"),
    ({"resolution": 3}, "resolution must be a preset name"),
    ({"prompt": 5}, "prompt must be text, got int"),
    ({"prompt": "a\x00b"}, "not valid UTF-8 text"),
    ({"negative_prompt": 5}, "negative prompt must be text, got int"),
    ({"height": 256, "width": 256}, "this server allows at most 24,576"),
]


@pytest.mark.parametrize("changes, message", WEB, ids=[next(iter(c)) + "-" + m[:20] for c, m in WEB])
def test_web_api_refuses_with_the_cli_message(handler, caplog, changes, message):
    with caplog.at_level(logging.INFO):
        assert message in handler(**changes)
    assert "Traceback" not in caplog.text


def test_web_out_of_memory_is_one_line_for_the_page_and_the_log(handler, caplog, monkeypatch):
    import gradio as gr

    from hyvideo.apps import webui

    def no_memory(self, request, job, report):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 9 TB")

    monkeypatch.setattr(webui.Generator, "run", no_memory)
    generate = webui.make_generate(handler.generator)
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error, match="out of memory while generating"):
        generate("a cat", "", "custom", 32, 48, 5, 2, 1, False, 6.0, 1.0, 7.0, [], None, lambda *a, **k: None)
    assert "Traceback" not in caplog.text and "out of memory for" in caplog.text


def test_web_api_call_with_too_few_values_is_one_line(tmp_path):
    gr = pytest.importorskip("gradio")
    from hyvideo.apps import webui
    from hyvideo.pipeline.variants import load_variant

    variant = load_variant("tiny-random")

    class Pipeline:
        name, device, defaults, geometry = "tiny", torch.device("cpu"), variant.sampling, variant.geometry

    demo = webui.build_demo(Pipeline(), output_dir=tmp_path, limits=webui.Limits())
    fn = next(f for f in demo.fns.values() if f.api_name == "generate")
    with pytest.raises(gr.Error, match="this endpoint takes 13 values .* the request has 1"):
        demo.validate_inputs(fn, ["a cat"])


@pytest.mark.parametrize("argv, needle", [
    (["--server-port", "{busy}"], "cannot listen on 127.0.0.1"),
    (["--server-name", "no-such-host.invalid"], "--server-name 'no-such-host.invalid' is not an address"),
    (["--server-port", "70000"], "70000 is not a port number"),
    (["--max-frames", "0"], "--max-frames"),
    (["--queue-size", "-1"], "--queue-size"),
    (["--output-dir", "{file}"], "--output-dir", ),
    (["--precision", "fp16"], "--precision cannot be used with --model tiny-random"),
])
def test_web_server_flags_are_checked_before_loading(capsys, ws, argv, needle):
    pytest.importorskip("gradio")
    from hyvideo.apps import web

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        subs = {**ws, "busy": busy.getsockname()[1]}
        argv = [a.format(**subs) for a in argv]
        if "--output-dir" not in argv:
            argv += ["--output-dir", str(ws["out"])]
        capsys.readouterr()
        code = web.main([*TINY, *argv])
    assert_one_line(code, capsys, needle)


# --- torchrun degrees -------------------------------------------------------------------------------

@pytest.mark.parametrize("world, argv, needle", [
    ("2", ["--ulysses-degree", "2", "--ring-degree", "2"], "4"),
    ("3", ["--ulysses-degree", "3"], "heads"),
    ("2", [], "1 processes, but 2 were started"),
])
def test_torchrun_degrees_are_checked_before_joining(capsys, ws, monkeypatch, world, argv, needle):
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", "0")
    code = run_sample(capsys, ws, [*SMALL, "--prompt", "a", *argv])
    assert_one_line(code, capsys, needle)


# --- in a fresh interpreter: errors come before anything heavy is imported ------------------------

PROBE = """
import sys
from hyvideo.apps.{module} import main
code = main({argv!r})
heavy = [m for m in ("torch", "transformers", "diffusers", "gradio") if m in sys.modules]
print("exit", code, "imported", heavy)
"""


@pytest.mark.parametrize("module, argv, needle", [
    ("sample", ["--prompt", "a", "--model-base", "{tmp}/none", "--save-path", "{tmp}/out"], "model folder"),
    ("sample", ["--prompt", "a", "--dit-weight", "{tmp}", "--save-path", "{tmp}/out"], "is a folder"),
    ("sample", ["--prompt-file", "{tmp}/p.jsonl", "--model-base", "{tmp}/none", "--save-path", "{tmp}/out"],
     "seed must be a whole number"),
    ("sample", ["--prompt", "a", "--flow-shift", "nan"], "not a finite number"),
    ("sample", ["--prompt", "a", "--save-path", "/proc/x"], "cannot create --save-path"),
    ("web", ["--model-base", "{tmp}/none", "--output-dir", "{tmp}/web", "--server-port", "{port}"], "model folder"),
])
def test_errors_come_before_torch_and_transformers_are_imported(tmp_path, module, argv, needle):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "seed": 1.5}\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [a.format(tmp=tmp_path, port=port) for a in argv]
    proc = subprocess.run([sys.executable, "-c", PROBE.format(module=module, argv=argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith(LOG_PREFIXES)]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr
    assert proc.stdout.strip() == "exit 2 imported []", proc.stdout + proc.stderr


def test_the_front_door_prints_one_line_and_a_help_hint(tmp_path):
    proc = subprocess.run([sys.executable, "sample_video.py", "--prompt", "a", "--seed", "x"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: argument --seed: invalid whole number 'x' (see sample_video.py --help)"]
