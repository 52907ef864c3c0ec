"""Shared fixtures: generated images with known answers and a real Keras model trained on them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bulklabel import keys

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Three colour classes: learnable by a tiny CNN, with enough texture to be real images.
COLORS = {"blue": (40, 70, 220), "green": (40, 190, 60), "red": (215, 40, 40)}
CLASSES = sorted(COLORS)
IMAGE_SIZE = (32, 32)


def color_photo(name: str, rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> Image.Image:
    """An image dominated by class colour ``name``, with gradient, noise and a distractor box."""
    h, w = size
    base = np.array(COLORS[name], np.float32)
    ramp = np.linspace(-30, 30, w, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
    arr = base + ramp + rng.normal(0, 12, (h, w, 3))
    other = np.array(COLORS[CLASSES[(CLASSES.index(name) + 1) % 3]], np.float32)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    arr[y0:y0 + h // 5, x0:x0 + w // 5] = other
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encoded(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@dataclass
class TrainedModel:
    keras_path: str
    h5_path: str
    savedmodel_path: str
    bare_path: str          # the same weights saved without any metadata
    classes: list[str]


def train_color_model(folder: Path, seed: int = 0) -> TrainedModel:
    import keras

    from worker.inference.decode import decode_image
    from worker.inference.metadata import write_metadata

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(CLASSES):
        for _ in range(60):
            size = (int(rng.integers(24, 90)), int(rng.integers(24, 90)))
            xs.append(decode_image(encoded(color_photo(name, rng, size)), IMAGE_SIZE))
            ys.append(label)
    x = np.stack(xs).astype("float32") / 255.0
    y = np.array(ys)
    model = keras.Sequential([
        keras.Input((*IMAGE_SIZE, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(CLASSES), activation="softmax"),
    ], name="colors")
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=30, verbose=0, shuffle=True)
    meta = {"name": "colors", "class_names": CLASSES, "preprocess": "rescale",
            "image_size": list(IMAGE_SIZE)}
    paths = TrainedModel(str(folder / "colors.keras"), str(folder / "colors.h5"),
                         str(folder / "colors_savedmodel"), str(folder / "bare.keras"), CLASSES)
    model.save(paths.bare_path)
    model.save(paths.keras_path)
    write_metadata(paths.keras_path, meta)
    model.save(paths.h5_path)
    write_metadata(paths.h5_path, meta)
    model.export(paths.savedmodel_path, verbose=False)
    write_metadata(paths.savedmodel_path, meta)
    return paths


@pytest.fixture(scope="session")
def color_model(tmp_path_factory) -> TrainedModel:
    return train_color_model(tmp_path_factory.mktemp("color_model"))


@pytest.fixture
def color_folder(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder of colour images in every supported format; returns (folder, path → class)."""
    rng = np.random.default_rng(123)
    folder = tmp_path / "photos"
    (folder / "sub dir").mkdir(parents=True)
    truth = {}
    formats = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"),
               ("GIF", "gif"), ("TIFF", "tiff"), ("JPEG", "JPEG")]
    for i in range(14):
        name = CLASSES[i % 3]
        fmt, ext = formats[i % len(formats)]
        where = folder / "sub dir" if i % 2 else folder
        path = where / f"ïmage {i}.{ext}"
        path.write_bytes(encoded(color_photo(name, rng, (60, 80)), fmt))
        truth[str(path)] = name
    return folder, truth


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``bulklabel`` as a user would, in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bulklabel", *args], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


# --- services started by the tests --------------------------------------------------


@pytest.fixture
def scratch_redis(request):
    """A client on database ``REDIS_DB`` (set by the test module) of the Redis at
    127.0.0.1:6379, emptied before and after each test. No Redis is a failure, not a skip."""
    from bulklabel.jobs import connect

    client = connect(f"redis://127.0.0.1:6379/{request.module.REDIS_DB}", patience=1)
    client.ping()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """An S3-compatible server over HTTP on loopback (moto's server mode)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "bulklabel-test-key",
            "AWS_SECRET_ACCESS_KEY": "bulklabel-test-secret-never-logged",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self._count = 0

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def new_bucket(self) -> str:
        self._count += 1
        name = f"bulklabel-test-{self._count}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    server._server.start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        server._server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- distributed jobs: one broker and one warm worker for the whole session -----------

REDIS_PASSWORD = "redis-secret-never-logged-7f3a"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from services import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"), password=REDIS_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def main_worker(broker, color_model, s3_server, tmp_path_factory):
    """One warm CPU worker serving the colour model on queue 'main' (shared by every test module),
    with Prometheus metrics on ``worker.metrics_port`` and JSON log lines."""
    log = tmp_path_factory.mktemp("logs") / "main-worker.log"
    from services import Worker

    bucket = s3_server.new_bucket()  # the one bucket it may write to (with the test folders)
    allowed = f"{tmp_path_factory.getbasetemp()},s3://{bucket}"
    port = free_port()
    worker = Worker(log, color_model.keras_path, "main", broker.url, "--metrics-port", str(port),
                    "--log-format", "json", env={**s3_server.env, "BULKLABEL_ALLOW_DEST": allowed})
    worker.bucket = bucket
    worker.metrics_port = port
    worker.wait_ready()
    yield worker
    worker.stop()


def submit(broker, *args: str, env: dict | None = None, timeout: float = 240):
    return run_cli("submit", *args, env={"BULKLABEL_REDIS_URL": broker.url, **(env or {})},
                   timeout=timeout)


def job_id_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def job_hash(broker, job_id: str) -> dict:
    return broker.client().hgetall(keys.job(job_id))


def shard_records(folder: Path) -> list[dict]:
    out = []
    for shard in sorted(folder.glob("part-*.jsonl")):
        out += [json.loads(line) for line in shard.read_text().splitlines()]
    return out


def assert_exactly_once(records: list[dict], expected_sources) -> None:
    sources = [r["source"] for r in records]
    assert len(sources) == len(set(sources)), "a source has more than one record"
    assert set(sources) == set(expected_sources)


def make_images(folder: Path, n: int, seed: int = 0, size=(60, 80)) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        name = CLASSES[i % 3]
        path = folder / f"img {i:03d}.jpg"
        path.write_bytes(encoded(color_photo(name, rng, size)))
        truth[str(path)] = name
    return truth


# --- Flower: the real monitoring UI, watching the session broker's events -------------------


class FlowerServer:
    """``celery flower`` on a free loopback port: basic auth, the broker URL and the password in
    its environment (never its command line), no periodic ``enable_events`` broadcast (workers
    send events on their own; their remote control is off)."""

    def __init__(self, broker_url: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = ("flower-test", "flower-secret-never-logged")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "CELERY_"))}
        env.update(CELERY_BROKER_URL=broker_url, FLOWER_BASIC_AUTH=":".join(self.auth))
        self._log = open(log, "ab")
        self.log_path = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "flower", f"--port={self.port}", "--address=127.0.0.1",
             "--enable_events=false", "--read_only"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def request(self, path: str, auth: tuple[str, str] | None = None, timeout: float = 10):
        """(status, body): the body parsed as JSON when it is JSON."""
        import base64
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path)
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        text = raw.decode(errors="replace")
        return status, json.loads(text) if kind.startswith("application/json") else text

    def get(self, path: str):
        """An authenticated GET that must succeed: its JSON."""
        status, body = self.request(path, self.auth)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def wait_ready(self, timeout: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"flower exited:\n{self.log()}"
            try:
                if self.request("/healthcheck", timeout=2) == (200, "OK"):
                    return
            except OSError:  # not listening yet (URLError is an OSError)
                pass
            assert time.monotonic() < deadline, f"flower not answering after {timeout} s:\n{self.log()}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def flower(broker, tmp_path_factory):
    """One real Flower for the session, on ``broker``; it sees only events sent after it started."""
    server = FlowerServer(broker.url, tmp_path_factory.mktemp("flower") / "flower.log")
    try:
        server.wait_ready()
        for auth in (None, (server.auth[0], "wrong")):
            status, _ = server.request("/api/workers", auth)
            assert status == 401, f"Flower answered {status} without the right password"
        yield server
    finally:
        server.stop()
