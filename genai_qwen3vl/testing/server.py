"""A real ``genai-qwen3vl serve`` process on 127.0.0.1, for the tests and the benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m genai_qwen3vl.serve MODEL_DIR --port P FLAGS`` in a subprocess; its log in a file."""

    def __init__(
        self,
        model_dir: Path,
        *flags: str,
        log_dir: Path,
        api_key: str | None = None,
        env: dict | None = None,
        new_session: bool = False,
    ):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log_path = Path(log_dir) / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "genai_qwen3vl.serve", str(model_dir), "--port", str(self.port), *flags]
        if api_key:
            cmd += ["--api-key", api_key]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=new_session
        )

    def wait_ready(self, timeout: float = 120.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as r:
                    if json.loads(r.read())["status"] == "ok":
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The server and its descendants (the og worker process)."""
        pids, i = [self.proc.pid], 0
        while i < len(pids):
            try:
                for task in Path(f"/proc/{pids[i]}/task").iterdir():
                    pids += [int(p) for p in (task / "children").read_text().split()]
            except FileNotFoundError:  # it ended while we looked
                pass
            i += 1
        return pids

    def rss_bytes(self) -> int:
        """Resident memory of the server and its worker together."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.terminate()
