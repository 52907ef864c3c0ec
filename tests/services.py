"""Real services for the distributed tests: a private Redis server and worker processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from conftest import free_port


class RedisServer:
    """A private redis-server with durable append-only persistence, so it can be restarted
    mid-job without losing the queue (as a production Redis for bulklabel should be set up)."""

    def __init__(self, folder: Path, password: str | None = None):
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen | None = None
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (scripts/test.sh installs it)"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # redis flushes the append-only file
            self.process.wait(15)
        self.process = None

    def restart(self, pause: float = 2.0) -> None:
        self.stop()
        time.sleep(pause)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=2)


class Worker:
    """``bulklabel worker`` in its own process group (so a test can kill the whole group)."""

    def __init__(self, log: Path, model: str, queue: str, redis_url: str, *extra: str,
                 env: dict | None = None, gpus: str = "none"):
        self.log_path = log
        self.queue = queue
        self.redis_url = redis_url
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
        full_env.update({"BULKLABEL_REDIS_URL": redis_url, "BULKLABEL_VISIBILITY_TIMEOUT": "30",
                         "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self._log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bulklabel", "worker", "--model", model, "--gpus", gpus,
             "--queue", queue, *extra],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def children(self) -> list[dict]:
        """Heartbeats of this worker's processes (pid, device, model...)."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        found = []
        for key in client.scan_iter("bulklabel:worker:*"):
            raw = client.get(key)
            if raw:
                info = json.loads(raw)
                if info["queue"] == self.queue and _parent(info["pid"]) == self.process.pid:
                    found.append(info)
        return found

    def wait_ready(self, processes: int = 1, timeout: float = 90) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited early:\n{self.log()}"
            kids = self.children()
            if len(kids) >= processes:
                time.sleep(0.5)  # heartbeat comes just before Celery starts consuming
                return kids
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL the supervisor and every child at once, as when a node dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
