"""Prompt rewrite against a loopback OpenAI-compatible server and a tiny local causal LM."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import sample_video
from hyvideo.apps.rewrite import (
    INSTRUCTIONS,
    ChatEndpoint,
    LocalCausalLM,
    PromptRewriter,
    RewriteError,
    RewriteOptions,
    build_rewriter,
    chat_completions_url,
    clean_reply,
)
from hyvideo.apps.video_io import read_mp4_metadata


class FakeServer:
    """/v1/chat/completions on 127.0.0.1: ``script`` is a list of behaviours, one per request
    (the last one repeats): "ok", "slow", "500", "400", "garbage"."""

    def __init__(self):
        self.script, self.requests = ["ok"], []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                step = owner.script[min(len(owner.requests) - 1, len(owner.script) - 1)]
                if step == "slow":
                    time.sleep(1.0)
                if step in ("500", "400"):
                    self.send_response(int(step))
                    self.end_headers()
                    self.wfile.write(b'{"error": "model not loaded"}')
                    return
                prompt = body["messages"][-1]["content"].rsplit("Prompt: ", 1)[-1]
                payload = b"not json" if step == "garbage" else json.dumps(
                    {"choices": [{"message": {"role": "assistant",
                                              "content": f'Rewritten prompt: "Cinematic shot of {prompt}."'}}]}
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def _server():
    server = FakeServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture
def server(_server):
    _server.script, _server.requests = ["ok"], []
    return _server


def test_endpoint_rewrite_normal_and_master(server):
    for mode in ("normal", "master"):
        rewriter = PromptRewriter(ChatEndpoint(server.url, "hv-rewrite", api_key="k"), mode)
        assert rewriter.rewrite("  a cat on grass ") == "Cinematic shot of a cat on grass."
        sent = server.requests[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer k"
        assert sent["body"]["model"] == "hv-rewrite"
        assert INSTRUCTIONS[mode] in sent["body"]["messages"][0]["content"]
    assert "camera movement" in INSTRUCTIONS["master"] and "camera" not in INSTRUCTIONS["normal"]


def test_retries_after_server_errors_and_timeouts(server):
    server.script = ["500", "slow", "ok"]
    endpoint = ChatEndpoint(server.url, timeout=0.3, retries=2, retry_wait=0)
    assert PromptRewriter(endpoint).rewrite("waves") == "Cinematic shot of waves."
    assert len(server.requests) == 3


def test_timeout_after_all_retries_is_a_clear_error(server):
    server.script = ["slow"]
    endpoint = ChatEndpoint(server.url, timeout=0.2, retries=1, retry_wait=0)
    with pytest.raises(RewriteError, match=r"no answer from .* within 0.2 s \(after 2 attempts\)"):
        PromptRewriter(endpoint).rewrite("waves")


def test_client_error_is_not_retried(server):
    server.script = ["400"]
    with pytest.raises(RewriteError, match="HTTP 400 from .*model not loaded"):
        PromptRewriter(ChatEndpoint(server.url, retries=3, retry_wait=0)).rewrite("waves")
    assert len(server.requests) == 1


def test_bad_json_and_fallback(server, caplog):
    server.script = ["garbage"]
    rewriter = PromptRewriter(ChatEndpoint(server.url, retries=0), "master", fallback=True)
    result = rewriter.rewrite_result("waves")
    assert result.prompt == "waves" and "did not answer with JSON" in result.error
    assert "prompt rewrite failed, using the original prompt" in caplog.text


def test_unreachable_endpoint():
    with pytest.raises(RewriteError, match="cannot reach http://127.0.0.1:9/v1/chat/completions"):
        PromptRewriter(ChatEndpoint("http://127.0.0.1:9", retries=0)).rewrite("x")


def test_helpers():
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    assert clean_reply('<think>hmm</think>\nPrompt: "A red fox."') == "A red fox."
    with pytest.raises(ValueError, match="unknown rewrite mode"):
        PromptRewriter(None, "poetic")
    with pytest.raises(ValueError, match="exactly one of"):
        build_rewriter(RewriteOptions())


# --- a tiny local causal LM ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from hyvideo.text.tokenizer import build_llava_llama3_tokenizer

    folder = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = build_llava_llama3_tokenizer()  # the installed Llama-3 tokenizer
    tokenizer.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                               "{{ m['content'] }}<|eot_id|>{% endfor %}"
                               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
                               "{% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128320, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128009)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_model_greedy_decoding(tiny_lm):
    lm = LocalCausalLM(tiny_lm, max_new_tokens=6)
    rewriter = PromptRewriter(lm, "normal")
    messages = rewriter.messages("a cat")
    ids = lm._input_ids(messages)
    text = lm.tokenizer.decode(ids[0])
    assert "<|start_header_id|>assistant<|end_header_id|>" in text and "Prompt: a cat" in text
    # Independent greedy decoding: argmax, token by token.
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            nxt = lm.model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    expected = clean_reply(lm.tokenizer.decode(seq[0, ids.shape[1]:], skip_special_tokens=True))
    assert expected and rewriter.rewrite("a cat") == expected


def test_local_model_folder_errors(tmp_path):
    with pytest.raises(RewriteError, match="has no config.json"):
        LocalCausalLM(tmp_path)


# --- the CLI: per job, recorded in the mp4 metadata and the manifest ------------------------------

SMALL = ["--model", "tiny-random", "--video-size", "32", "32", "--video-length", "5", "--infer-steps", "1",
         "--quiet", "--seed", "1"]


def test_cli_batch_rewrites_each_row_and_records_both_prompts(server, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    code = sample_video.main([*SMALL, "--prompt-file", str(prompts), "--rewrite", "master",
                              "--rewrite-endpoint", server.url, "--save-path", str(tmp_path / "out")])
    assert code == 0
    records = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["original_prompt"], r["rewrite_mode"]) for r in records] == [
        ("Cinematic shot of a cat.", "a cat", "master"), ("Cinematic shot of a dog.", "a dog", "master")]
    meta = read_mp4_metadata(records[0]["output"])
    assert meta["prompt"] == "Cinematic shot of a cat." and meta["original_prompt"] == "a cat"


def test_cli_rewrite_failure(server, tmp_path, capsys):
    server.script = ["500"]
    argv = [*SMALL, "--prompt", "a cat", "--rewrite", "normal", "--rewrite-endpoint", server.url,
            "--rewrite-retries", "0", "--output-type", "latents"]
    assert sample_video.main([*argv, "--save-path", str(tmp_path / "a")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "HTTP 500" in err[0] and not list((tmp_path / "a").glob("*.safetensors"))
    assert sample_video.main([*argv, "--rewrite-fallback", "--save-path", str(tmp_path / "b")]) == 0
    record = json.loads((tmp_path / "b" / "manifest.jsonl").read_text())
    assert record["prompt"] == "a cat" and "HTTP 500" in record["rewrite_error"]


@pytest.mark.parametrize("args,message", [
    (["--rewrite", "normal"], "--rewrite needs exactly one of --rewrite-endpoint URL or --rewrite-model-path"),
    (["--rewrite-endpoint", "http://x"], "--rewrite-endpoint needs --rewrite normal|master"),
    (["--rewrite", "normal", "--rewrite-model-path", "/nonexistent"], "is not a folder"),
    (["--rewrite", "normal", "--rewrite-endpoint", "ftp://x"], "must be an http:// or https:// URL"),
])
def test_cli_bad_rewrite_flags(tmp_path, capsys, args, message):
    code = sample_video.main([*SMALL, "--prompt", "x", *args, "--save-path", str(tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_cli_local_rewrite_model(tiny_lm, tmp_path):
    code = sample_video.main([*SMALL, "--prompt", "a cat", "--rewrite", "normal", "--rewrite-model-path",
                              str(tiny_lm), "--rewrite-max-tokens", "4", "--output-type", "latents",
                              "--save-path", str(tmp_path)])
    assert code == 0
    record = json.loads((tmp_path / "manifest.jsonl").read_text())
    assert record["original_prompt"] == "a cat" and record["prompt"] != "a cat" and record["rewrite_mode"] == "normal"
