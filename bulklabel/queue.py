"""The Celery application both sides share: one configuration, JSON only.

Reliability settings (see ARCHITECTURE.md, "Delivery"):

* late acks + reject on worker lost + prefetch 1: a chunk is acknowledged only after its
  shard is written and counted, and a worker holds one chunk at a time;
* the visibility timeout (``BULKLABEL_VISIBILITY_TIMEOUT``) is how long a delivered,
  unacknowledged chunk waits before Redis gives it to another worker; the restore sweep
  runs every tenth of it (1-10 s) so a dead worker's chunk moves on promptly after it;
* pickle is never accepted; results are not stored (progress lives in the job hash).
"""

from __future__ import annotations

from .settings import DEFAULT_QUEUE


def make_app(redis_url: str, visibility_timeout: int):
    from celery import Celery

    app = Celery("bulklabel", broker=redis_url, set_as_current=False)
    sweep = max(1, min(10, visibility_timeout // 10))
    transport = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_default_queue=DEFAULT_QUEUE,
    )
    return app
