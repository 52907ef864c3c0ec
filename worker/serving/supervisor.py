"""``bulklabel worker``: one child process per GPU, pinned, restarted if it dies.

The supervisor never imports TensorFlow. It decides the devices (``--gpus``), starts one
``worker.serving.process`` child per device with ``CUDA_VISIBLE_DEVICES`` set in the child's own
environment (so it is in place before TensorFlow loads), restarts a child that dies (with
backoff), and forwards SIGTERM/SIGINT so each child finishes its current chunk and exits.
A child that fails on configuration (bad model, bad flag: exit 2 or 3) stops everything:
restarting it would fail the same way.

With ``--metrics-port PORT`` the ``i``-th child serves its metrics on ``PORT + i``; the
supervisor checks that every one of those ports is free before starting anything.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from bulklabel import logs
from bulklabel.errors import ConfigError

from .process import WorkerConfig

log = logging.getLogger("bulklabel.supervisor")

FATAL_EXIT_CODES = {2, 3}


def detect_gpus(spec: str) -> list[str]:
    """Device list for ``--gpus``: GPU ids, or ['cpu'] for one CPU process."""
    spec = (spec or "auto").strip().lower()
    if spec in ("none", "cpu"):
        return ["cpu"]
    if spec == "auto":
        return visible_gpus() or ["cpu"]
    ids = [p.strip() for p in spec.split(",") if p.strip()]
    if not ids or not all(re.fullmatch(r"\d+|gpu-[0-9a-f-]+|mig-[0-9a-z/-]+", i) for i in ids):
        raise ConfigError(f"--gpus takes auto, none, or GPU ids like 0,1. Received: {spec!r}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus lists a GPU twice. Received: {spec!r}")
    return ids


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [p.strip() for p in env.split(",") if p.strip()]
        return [] if not ids or ids[0].startswith("-") else ids
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


@dataclass
class Child:
    device: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, config: WorkerConfig, devices: list[str]):
        self.config = config
        self.children = [Child(d) for d in devices]
        self.stopping = False
        self.exit_code = 0

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ)
        # Pin before TensorFlow exists in the child; a CPU child sees no GPU at all.
        env["CUDA_VISIBLE_DEVICES"] = child.device if child.device != "cpu" else "-1"
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        # The configuration holds the Redis URL, password included: it goes through an
        # inherited pipe, never the command line (which any local user can read with ps).
        config_fd, feed = os.pipe()
        try:
            child.process = subprocess.Popen(
                [sys.executable, "-m", "worker.serving.process", "--config-fd", str(config_fd)],
                env=env, pass_fds=(config_fd,))
        finally:
            os.close(config_fd)
        try:
            with os.fdopen(feed, "w", encoding="utf-8") as pipe:
                index = next(i for i, c in enumerate(self.children) if c is child)
                pipe.write(self.config.on(child.device, index).to_json())  # metrics port: PORT + index
        except BrokenPipeError:
            pass  # the child is already gone: the supervision loop sees its exit
        child.started = time.monotonic()

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:  # second signal: stop now
            for child in self.children:
                if child.process and child.process.poll() is None:
                    child.process.kill()
            return
        self.stopping = True
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    def _say(self, message: str, level: int = logging.WARNING) -> None:
        """A line about the children: a log record with --log-format json, else plain text."""
        if self.config.log_format == "json":
            log.log(level, "%s", message)
        else:
            print(f"bulklabel: {message}", file=sys.stderr)

    def run(self) -> int:
        if self.config.log_format == "json":
            logs.setup("json")
        if self.config.metrics_port:  # fail fast: before any child loads TensorFlow
            from .metrics import check_ports

            check_ports(range(self.config.metrics_port, self.config.metrics_port + len(self.children)))
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self.children:
            self._spawn(child)
        while True:
            alive = False
            for child in self.children:
                proc = child.process
                if proc is None:
                    if not self.stopping and time.monotonic() >= child.restart_at:
                        self._spawn(child)
                    alive = alive or not self.stopping
                    continue
                code = proc.poll()
                if code is None:
                    alive = True
                    continue
                child.process = None
                if self.stopping:
                    continue
                if code in FATAL_EXIT_CODES:
                    self._say(f"worker on {child.device} failed to start (exit {code}); stopping",
                              logging.ERROR)
                    self.exit_code = code
                    self._on_signal(signal.SIGTERM, None)
                    continue
                uptime = time.monotonic() - child.started
                child.failures = 0 if uptime > 60 else child.failures + 1
                delay = min(30.0, 2.0 ** child.failures) if child.failures else 0.5
                self._say(f"worker on {child.device} exited with {code} after {uptime:.0f} s; "
                          f"restarting in {delay:.0f} s")
                child.restart_at = time.monotonic() + delay
                alive = True
            if not alive:
                return self.exit_code
            time.sleep(0.2)
