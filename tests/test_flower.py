"""Flower, the Celery monitor, on bulklabel's workers: the real ``celery flower`` (session fixture
``flower``) against the session's Redis and warm worker, read through its HTTP API.

Workers send task events and worker-heartbeat events (``bulklabel.queue``); a chunk appears in
them as a short repr, never as its image paths. Remote control stays off, so Flower's
inspect-based views (``/api/workers``) stay empty while its event-based ones show everything.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter

import pytest
import redis

from bulklabel.chunks import TASK_NAME, ChunkMessage
from bulklabel.errors import ConfigError
from bulklabel.queue import EventHeartbeat, make_app, task_events

from conftest import job_id_of, make_images, submit
from services import wait_for


class EventTap(threading.Thread):
    """Every message on the broker's event fanout (``celeryev``, Redis pub/sub), as it crosses Redis."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.pubsub = redis.Redis.from_url(url).pubsub()
        self.pubsub.psubscribe("*celeryev*")
        self.messages: list[tuple[int, bytes, list[dict]]] = []  # (size, raw, events)

    def run(self) -> None:
        try:
            for item in self.pubsub.listen():
                if item["type"] == "pmessage":
                    self.messages.append(self._decode(item["data"]))
        except Exception:  # closed
            pass

    @staticmethod
    def _decode(raw: bytes) -> tuple[int, bytes, list[dict]]:
        envelope = json.loads(raw)  # kombu's: the body (one event, or a batch of them) in base64
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        events = json.loads(body)
        return len(raw), raw, events if isinstance(events, list) else [events]

    def close(self) -> None:
        self.pubsub.close()


def finished_tasks(flower, job_id: str, chunks: int) -> dict[str, dict] | None:
    """Flower's tasks of job ``job_id`` (found by the job id in the kwargs repr) once all
    ``chunks`` have succeeded, else None."""
    tasks = flower.get(f"/api/tasks?taskname={TASK_NAME}")
    ours = {uuid: t for uuid, t in tasks.items() if f"'job_id': '{job_id}'" in (t.get("kwargs") or "")}
    return ours if len(ours) == chunks and all(t["state"] == "SUCCESS" for t in ours.values()) else None


@pytest.mark.slow
def test_flower_shows_the_worker_and_each_chunk_with_its_runtime(flower, broker, main_worker, tmp_path):
    name = main_worker.children()[0]["name"]
    # online from its heartbeat events: Flower is receiving events before the job starts
    wait_for(lambda: flower.get("/api/workers?status=1").get(name) is True, 15, f"Flower to show {name} online",
             interval=0.3)

    folder, dest = tmp_path / "photos", tmp_path / "labels"
    make_images(folder, 10)
    tap = EventTap(broker.url)
    tap.start()
    try:
        job_id = job_id_of(submit(broker, str(folder), "--out", str(dest), "--queue", "main",
                                  "--chunk-size", "4", "--wait"))
        tasks = wait_for(lambda: finished_tasks(flower, job_id, 3), 15, "Flower to show 3 chunks done",
                         interval=0.3)
        wait_for(lambda: sum(e.get("uuid") in tasks and e["type"] == "task-succeeded"
                             for _, _, events in tap.messages for e in events) == 3, 5, "the tap's events")
    finally:
        tap.close()

    for task in tasks.values():
        assert (task["name"], task["state"], task["worker"]) == (TASK_NAME, "SUCCESS", name)
        assert task["runtime"] > 0 and task["received"] <= task["started"] <= task["succeeded"]
        assert task["args"] == "()" and str(folder) not in task["kwargs"]
    shown = {t["kwargs"] for t in tasks.values()}
    assert shown == {f"{{'job_id': '{job_id}', 'chunk': {n}, 'sources': {k} images, 'dest': {str(dest)!r}}}"
                     for n, k in ((0, 4), (1, 4), (2, 2))}
    info = flower.get(f"/api/task/info/{next(iter(tasks))}")
    assert info["state"] == "SUCCESS" and info["worker"] == name and info["runtime"] > 0

    # the dashboard's worker list (events): online, with its event counts
    row = next(w for w in flower.get("/workers?json=1")["data"] if w["hostname"] == name)
    assert row["status"] is True and row["task-succeeded"] >= 3
    # remote control is off: the worker answers no inspect request, so this list stays empty of it
    assert name not in flower.get("/api/workers?refresh=1")

    # what crossed Redis pub/sub for this job: 3 events a chunk, in few messages, and no image path
    ours = [(size, [e for e in events if e.get("uuid") in tasks]) for size, _, events in tap.messages]
    ours = [(size, events) for size, events in ours if events]
    per_type = Counter(e["type"] for _, events in ours for e in events)
    assert per_type == {"task-received": 3, "task-started": 3, "task-succeeded": 3}
    assert len(ours) <= 9
    assert not any(str(folder).encode() in raw for _, raw, _ in tap.messages)
    print(f"\nevents per chunk: {sum(per_type.values()) / 3:.0f} in {len(ours) / 3:.1f} Redis messages, "
          f"{sum(size for size, _ in ours) / 3:.0f} bytes")


def test_event_heartbeat_sends_online_heartbeats_and_offline(broker):
    """From its own thread and connection, so a chunk running in the worker's loop cannot stall it."""
    app = make_app(broker.url, 30, task_events=True)
    tap = EventTap(broker.url)
    tap.start()
    pulse = EventHeartbeat(app, "bulklabel-test-pulse@here", every=0.2)
    try:
        pulse.start()
        wait_for(lambda: sum(e["hostname"] == pulse.hostname for _, _, events in tap.messages for e in events) >= 3,
                 10, "three events from the pulse")
        pulse.stop()
        assert not pulse.is_alive()
        wait_for(lambda: any(e["type"] == "worker-offline" for _, _, events in tap.messages for e in events),
                 5, "worker-offline")
    finally:
        pulse.stop()
        tap.close()
    events = [e for _, _, batch in tap.messages for e in batch if e["hostname"] == pulse.hostname]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "worker-online" and kinds[-1] == "worker-offline"
    assert set(kinds[1:-1]) == {"worker-heartbeat"}
    assert all(e["freq"] == 0.2 and e["sw_ident"] == "py-celery" and "active" in e for e in events)


def test_a_republished_chunk_keeps_its_short_repr():
    """``Task.retry`` republishes without ``kwargsrepr``: the app fills in the short one."""
    app = make_app("redis://127.0.0.1:1/0", 30)
    fields = ChunkMessage("j1", 7, tuple(f"/photos/{i}.jpg" for i in range(256)), "/labels").to_json()
    headers = app.amqp.create_task_message("t1", TASK_NAME, (), fields).headers
    assert headers["kwargsrepr"] == "{'job_id': 'j1', 'chunk': 7, 'sources': 256 images, 'dest': '/labels'}"
    assert headers["argsrepr"] == "()"
    other = app.amqp.create_task_message("t2", "another.task", (), {"path": "/photos/1.jpg"}).headers
    assert "/photos/1.jpg" in other["kwargsrepr"]  # any other task: Celery's own repr


def test_task_events_are_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv("BULKLABEL_TASK_EVENTS", raising=False)
    assert task_events() is True
    monkeypatch.setenv("BULKLABEL_TASK_EVENTS", "0")
    assert task_events() is False
    assert make_app("redis://127.0.0.1:1/0", 30).conf.worker_send_task_events is False  # producers: none
    assert make_app("redis://127.0.0.1:1/0", 30, task_events=True).conf.worker_enable_remote_control is False
    monkeypatch.setenv("BULKLABEL_TASK_EVENTS", "sometimes")
    with pytest.raises(ConfigError, match="BULKLABEL_TASK_EVENTS"):
        task_events()
