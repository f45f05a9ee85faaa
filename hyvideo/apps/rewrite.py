"""Prompt rewrite: turn a user's prompt into the kind of prompt the model was trained on.

Two modes, with our own instruction texts: ``normal`` clarifies what the user asked for;
``master`` also adds composition, lighting and camera movement. The rewrite model runs
elsewhere: behind any OpenAI-compatible chat endpoint (e.g. vLLM serving the released
HunyuanVideo prompt-rewrite model; :class:`ChatEndpoint`, standard library HTTP only) or as a
local ``transformers`` causal LM folder (:class:`LocalCausalLM`, greedy decoding).

:meth:`PromptRewriter.rewrite` (or :meth:`~PromptRewriter.rewrite_result`, which also keeps the
original prompt) is the one call a front end needs: the CLI makes it per job, before the models
load (the web demo does not rewrite). A failure raises :class:`RewriteError`; with ``fallback``
it is logged as a warning and the original prompt is used.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_REWRITE_MODEL = "HunyuanVideo-PromptRewrite"

_COMMON = (
    "You rewrite prompts for a text-to-video generation model. The model works best with one "
    "plain English paragraph that describes what is seen: the subject and its appearance, what it "
    "does, where it is, and the overall visual style. Keep every detail the user gave, and never "
    "contradict it; keep names, numbers, colours and quoted text exactly. If the prompt is not in "
    "English, translate it. Do not add sound, dialogue, or anything that cannot be seen. Reply "
    "with the rewritten prompt only: no title, no quotes, no explanation, no list."
)
NORMAL_INSTRUCTIONS = _COMMON + (
    "\n\nMode: normal. Make the user's intent explicit and unambiguous: name the main subject, "
    "its key attributes and its action in clear, concrete words; resolve vague references; "
    "state the setting and the style if they are implied. Stay close to the user's wording and "
    "length (at most about 60 words); do not invent a story."
)
MASTER_INSTRUCTIONS = _COMMON + (
    "\n\nMode: master. Write it as a cinematographer's shot description of about 80 to 120 words. "
    "Besides the subject, action and setting, specify: the composition and framing (shot size, "
    "subject placement, foreground and background), the lighting (direction, quality, colour "
    "temperature, time of day), the colour palette and atmosphere, and one clear camera movement "
    "(static, slow push-in, pan, tracking, orbit, crane...) with its speed. Choose choices that "
    "serve the user's idea; keep it to a single continuous shot."
)
INSTRUCTIONS: dict[str, str] = {"normal": NORMAL_INSTRUCTIONS, "master": MASTER_INSTRUCTIONS}
REWRITE_MODES = tuple(INSTRUCTIONS)


class RewriteError(RuntimeError):
    """The rewrite model could not be reached or gave no usable answer (the message says which)."""


class ChatBackend(Protocol):
    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to ``messages`` (OpenAI chat format)."""


def chat_completions_url(endpoint: str) -> str:
    """``http://host:8000`` / ``.../v1`` / ``.../v1/chat/completions`` -> the completions URL."""
    url = endpoint.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


class ChatEndpoint:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint (urllib, JSON).

    Timeouts, connection errors, HTTP 429 and 5xx are retried ``retries`` times with a doubling
    wait; any other HTTP error fails at once with its status and the start of the body.
    """

    def __init__(self, endpoint: str, model: str = DEFAULT_REWRITE_MODEL, *, timeout: float = 60.0,
                 retries: int = 2, api_key: str | None = None, max_tokens: int = 512,
                 temperature: float = 0.0, retry_wait: float = 1.0):
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"rewrite endpoint {endpoint!r} must be an http:// or https:// URL")
        if timeout <= 0 or retries < 0:
            raise ValueError("rewrite timeout must be > 0 and retries >= 0")
        self.url, self.model = chat_completions_url(endpoint), model
        self.timeout, self.retries, self.retry_wait = timeout, retries, retry_wait
        self.api_key, self.max_tokens, self.temperature = api_key, max_tokens, temperature

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                           "temperature": self.temperature, "stream": False}).encode("utf-8")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_wait * 2 ** (attempt - 1))
            try:
                return _reply_text(self._post(body), self.url)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200].replace("\n", " ")
                problem = f"HTTP {exc.code} from {self.url}: {detail or exc.reason}"
                if exc.code != 429 and exc.code < 500:
                    raise RewriteError(problem) from None
            except (TimeoutError, socket.timeout):
                problem = f"no answer from {self.url} within {self.timeout:g} s"
            except urllib.error.URLError as exc:
                reason = exc.reason
                problem = (f"no answer from {self.url} within {self.timeout:g} s"
                           if isinstance(reason, (TimeoutError, socket.timeout))
                           else f"cannot reach {self.url}: {reason}")
            except (ValueError, UnicodeDecodeError) as exc:
                problem = f"{self.url} did not answer with JSON: {exc}"
            log.warning("prompt rewrite attempt %d/%d failed: %s", attempt + 1, self.retries + 1, problem)
        raise RewriteError(f"{problem} (after {self.retries + 1} attempts)")


def _reply_text(reply: dict, source: str) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RewriteError(f"{source} answered without choices[0].message.content: "
                           f"{json.dumps(reply)[:200]}") from None
    if not isinstance(content, str):
        raise RewriteError(f"{source} answered with non-text content")
    return content


class LocalCausalLM:
    """A local ``transformers`` causal LM folder (config, weights, tokenizer), greedy decoding.

    The tokenizer's chat template formats the messages when it has one; otherwise the message
    texts are joined, followed by ``"\\nRewritten prompt:"``.
    """

    def __init__(self, path: str | Path, *, device=None, dtype=None, max_new_tokens: int = 512):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise RewriteError(f"rewrite model folder {path} has no config.json "
                               "(a transformers causal LM folder is expected)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise RewriteError(f"cannot load the rewrite model from {path}: {exc}") from exc
        self.model = self.model.to(device or "cpu").eval()
        self.max_new_tokens = max_new_tokens

    def _input_ids(self, messages: list[dict[str, str]]):
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
            return ids["input_ids"]
        text = "\n\n".join(m["content"] for m in messages) + "\nRewritten prompt:"
        return self.tokenizer(text, return_tensors="pt")["input_ids"]

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        input_ids = self._input_ids(messages).to(self.model.device)  # [1, N]
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else self.tokenizer.eos_token_id
        try:
            with torch.inference_mode():
                out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                          max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=pad)
        except RuntimeError as exc:  # out of memory, device errors
            raise RewriteError(f"the local rewrite model failed: {exc}") from exc
        return self.tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)


_LABEL = re.compile(r"^\s*(rewritten|improved|enhanced|final)?\s*prompt\s*:\s*", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def clean_reply(text: str) -> str:
    """The prompt inside a model's reply: reasoning, a leading label and wrapping quotes removed."""
    text = _LABEL.sub("", _THINK.sub("", text).strip()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


@dataclass(frozen=True)
class Rewrite:
    """One rewrite: ``prompt`` is what gets encoded (the original when the rewrite failed and
    the fallback was used; ``error`` then says why)."""

    prompt: str
    original: str
    mode: str
    error: str | None = None

    def metadata(self) -> dict:
        """Fields for the output's metadata and the manifest (``prompt`` is the request's)."""
        meta = {"original_prompt": self.original, "rewrite_mode": self.mode}
        if self.error:
            meta["rewrite_error"] = self.error
        return meta


class PromptRewriter:
    """``rewrite(prompt) -> str`` with a mode's instructions through a chat backend."""

    def __init__(self, backend: ChatBackend, mode: str = "normal", *, fallback: bool = False):
        if mode not in INSTRUCTIONS:
            raise ValueError(f"unknown rewrite mode {mode!r}; choose one of {', '.join(REWRITE_MODES)}")
        self.backend, self.mode, self.fallback = backend, mode, fallback

    def messages(self, prompt: str) -> list[dict[str, str]]:
        # One user message: chat templates without a system role accept it as well.
        return [{"role": "user", "content": f"{INSTRUCTIONS[self.mode]}\n\nPrompt: {prompt.strip()}"}]

    def rewrite_result(self, prompt: str) -> Rewrite:
        try:
            text = clean_reply(self.backend.complete(self.messages(prompt)))
            if not text:
                raise RewriteError("the rewrite model returned an empty prompt")
        except RewriteError as exc:
            if not self.fallback:
                raise
            log.warning("prompt rewrite failed, using the original prompt: %s", exc)
            return Rewrite(prompt, prompt, self.mode, str(exc))
        log.info("prompt rewrite (%s): %r -> %r", self.mode, prompt, text)
        return Rewrite(text, prompt, self.mode)

    def rewrite(self, prompt: str) -> str:
        """The model-preferred version of ``prompt`` (raises :class:`RewriteError` on failure,
        unless ``fallback``: then the original prompt)."""
        return self.rewrite_result(prompt).prompt


@dataclass(frozen=True)
class RewriteOptions:
    """How to reach the rewrite model (the CLI's ``--rewrite*`` flags)."""

    mode: str = "normal"
    endpoint: str | None = None
    model: str = DEFAULT_REWRITE_MODEL
    model_path: Path | None = None
    timeout: float = 60.0
    retries: int = 2
    fallback: bool = False
    max_new_tokens: int = 512
    api_key: str | None = None
    device: str | None = None


def build_rewriter(opts: RewriteOptions) -> PromptRewriter:
    """A rewriter for an endpoint or a local model folder (exactly one must be given)."""
    if bool(opts.endpoint) == bool(opts.model_path):
        raise ValueError("prompt rewrite needs exactly one of --rewrite-endpoint URL or "
                         "--rewrite-model-path FOLDER")
    if opts.endpoint:
        backend: ChatBackend = ChatEndpoint(opts.endpoint, opts.model, timeout=opts.timeout,
                                            retries=opts.retries, api_key=opts.api_key,
                                            max_tokens=opts.max_new_tokens)
    else:
        backend = LocalCausalLM(opts.model_path, device=opts.device, max_new_tokens=opts.max_new_tokens)
    return PromptRewriter(backend, opts.mode, fallback=opts.fallback)


__all__ = [
    "ChatEndpoint",
    "INSTRUCTIONS",
    "LocalCausalLM",
    "PromptRewriter",
    "REWRITE_MODES",
    "Rewrite",
    "RewriteError",
    "RewriteOptions",
    "build_rewriter",
    "chat_completions_url",
    "clean_reply",
]
