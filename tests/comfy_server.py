"""A real ComfyUI server for the tests in test_comfyui_server.py (used only when $COMFYUI_DIR is set).

    COMFYUI_DIR     a ComfyUI checkout (the folder with main.py); unset: those tests skip
    COMFYUI_PYTHON  the interpreter that runs it (default: this one); it needs ComfyUI's requirements,
                    torchvision included, which ComfyUI imports at start

`ComfyServer(root)` lays out a throw-away ComfyUI home under `root` (nothing is written into the checkout):

    root/custom_nodes/causalwan-stream  -> this repository (a symlink, loaded as ComfyUI-Manager names it)
    root/custom_nodes/<more>/           test-only node folders given to the constructor
    root/models/{diffusion_models,vae,text_encoders}/
    root/input, root/output, root/temp, root/user
    root/extra_model_paths.yaml         adds custom_nodes and the three model folders
    root/server.log                     everything the server printed

and starts `python main.py --cpu --listen 127.0.0.1 --port <free port> ...` on it. Every wait is bounded;
`stop()` ends the server (terminate, then kill) and is safe to call twice.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACK_NAME = "causalwan-stream"
REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL_KINDS = ("diffusion_models", "vae", "text_encoders")
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


def comfyui_dir() -> Path | None:
    value = os.environ.get("COMFYUI_DIR")
    return Path(value).expanduser().resolve() if value else None


def skip_reason() -> str | None:
    """Why the real-server tests cannot run here, or None when they can."""
    root = comfyui_dir()
    if root is None:
        return "COMFYUI_DIR is not set: point it at a ComfyUI checkout to run the real-server tests"
    if not (root / "main.py").is_file():
        return f"COMFYUI_DIR={root} has no main.py: not a ComfyUI checkout"
    python = comfyui_python()
    if not Path(python).exists():
        return f"COMFYUI_PYTHON={python} does not exist"
    if importlib.util.find_spec("websocket") is None:  # websocket-client, in the [test] extras
        return "the websocket-client package is missing: pip install -e '.[test]'"
    return None


def comfyui_python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def comfyui_commit(root: Path) -> str:
    """`git describe`-like identification of the checkout: commit and ComfyUI version, when known."""
    parts = []
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0:
            parts.append(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    version_file = root / "comfyui_version.py"
    if version_file.is_file():
        for line in version_file.read_text().splitlines():
            if line.startswith("__version__"):
                parts.append("v" + line.split("=", 1)[1].strip().strip("\"'"))
    return " ".join(parts) or "unknown"


@dataclass
class Run:
    """What the websocket said about one queued prompt."""

    prompt_id: str
    messages: list = field(default_factory=list)  # (type, data) of the JSON messages, in order
    binary: int = 0  # binary messages (preview images)
    status: str = ""  # the terminal message type, "" if none came in time

    def of(self, kind: str, **match) -> list[dict]:
        """Data of the messages of `kind` whose fields equal `match`."""
        return [d for t, d in self.messages
                if t == kind and all(d.get(k) == v for k, v in match.items())]

    def progress(self, node: str) -> list[tuple[int, int]]:
        """(value, max) of the progress messages of one node."""
        return [(d["value"], d["max"]) for d in self.of("progress", node=node, prompt_id=self.prompt_id)]

    def error(self) -> str:
        errs = self.of("execution_error")
        if not errs:
            return ""
        e = errs[-1]
        return f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_message')}\n" + \
            "".join(e.get("traceback") or [])


class ComfyServer:
    def __init__(self, root: Path, extra_node_folders: dict[str, str] | None = None,
                 comfy_dir: Path | None = None, python: str | None = None, args: tuple = ()):
        """extra_node_folders: {folder name: __init__.py source} of test-only node packs to load as well."""
        self.root = Path(root)
        self.comfy_dir = comfy_dir or comfyui_dir()
        self.python = python or comfyui_python()
        self.args = tuple(args)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex
        self._ws = None
        self.models = self.root / "models"
        self.input = self.root / "input"
        self.output = self.root / "output"
        self.log_path = self.root / "server.log"
        self._layout(extra_node_folders or {})

    # ------------------------------------------------------------------------------------------ set-up
    def _layout(self, extra_node_folders: dict[str, str]) -> None:
        nodes = self.root / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        link = nodes / PACK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        for name, source in extra_node_folders.items():
            (nodes / name).mkdir(exist_ok=True)
            (nodes / name / "__init__.py").write_text(source)
        for kind in MODEL_KINDS:
            (self.models / kind).mkdir(parents=True, exist_ok=True)
        for d in ("input", "output", "temp", "user"):
            (self.root / d).mkdir(exist_ok=True)
        lines = ["causalwan_test:", f"    base_path: {self.root}", "    custom_nodes: custom_nodes"]
        lines += [f"    {kind}: models/{kind}" for kind in MODEL_KINDS]
        (self.root / "extra_model_paths.yaml").write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [self.python, "main.py", "--cpu", "--listen", HOST, "--port", str(self.port),
                "--output-directory", str(self.output), "--input-directory", str(self.input),
                "--temp-directory", str(self.root / "temp"), "--user-directory", str(self.root / "user"),
                "--database-url", "sqlite:///:memory:", "--extra-model-paths-config",
                str(self.root / "extra_model_paths.yaml"), "--disable-auto-launch", *self.args]

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        """Start the server and wait (at most `timeout` s) until it answers; raises with the log's tail if not."""
        self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=str(self.comfy_dir), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode} while starting:\n"
                                   f"{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log()[-chars:]

    # ------------------------------------------------------------------------------------------ HTTP
    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, path: str, data: dict | None = None, timeout: float = 30.0):
        """POST JSON; an HTTP error is returned as {"http_error": code, ...body} instead of raised."""
        req = urllib.request.Request(self.url + path, data=json.dumps(data or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {"text": body.decode(errors="replace")}
            return {"http_error": e.code, **(parsed if isinstance(parsed, dict) else {"body": parsed})}
        try:
            return json.loads(body) if body else None
        except ValueError:
            return {"text": body.decode(errors="replace")}

    # ------------------------------------------------------------------------------------------ websocket
    def websocket(self):
        """The test's websocket (/ws?clientId=...), opened once; ComfyUI sends it every event of our prompts."""
        if self._ws is None:
            import websocket

            self._ws = websocket.create_connection(f"ws://{HOST}:{self.port}/ws?clientId={self.client_id}",
                                                   timeout=10)
        return self._ws

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id (raises with the server's answer if it refused the prompt)."""
        self.websocket()  # connected before queueing, so no message of this prompt is missed
        answer = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if not answer or "prompt_id" not in answer:
            raise AssertionError(f"ComfyUI refused the prompt: {json.dumps(answer, indent=1)[:4000]}")
        return answer["prompt_id"]

    def follow(self, prompt_id: str, timeout: float = 300.0, on_message=None) -> Run:
        """Read the websocket until `prompt_id` ends (success, error or interrupt) or `timeout` s pass.

        on_message(run, type, data) is called for each JSON message (e.g. to POST /interrupt mid-run).
        """
        import websocket

        ws = self.websocket()
        run = Run(prompt_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died during the run:\n{self.log_tail()}")
            ws.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            try:
                msg = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if isinstance(msg, bytes):
                run.binary += 1
                continue
            event = json.loads(msg)
            kind, data = event.get("type"), event.get("data") or {}
            run.messages.append((kind, data))
            if on_message is not None:
                on_message(run, kind, data)
            if kind in TERMINAL and data.get("prompt_id") == prompt_id:
                run.status = kind
                return run
        return run

    def run(self, prompt: dict, timeout: float = 300.0, on_message=None) -> Run:
        return self.follow(self.queue(prompt), timeout, on_message)

    def history(self, prompt_id: str, timeout: float = 30.0) -> dict:
        """The /history entry of a prompt (waits, bounded, for it to be written after the run ends)."""
        deadline = time.monotonic() + timeout
        while True:
            entry = (self.get(f"/history/{prompt_id}") or {}).get(prompt_id)
            if entry is not None or time.monotonic() > deadline:
                return entry or {}
            time.sleep(0.2)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is running or pending (GET /queue)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.get("/queue")
            if not q.get("queue_running") and not q.get("queue_pending"):
                return True
            time.sleep(0.2)
        return False
