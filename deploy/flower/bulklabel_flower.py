"""Celery configuration for Flower watching bulklabel's Redis (``celery flower``, no ``-A``).

Loaded through ``CELERY_CONFIG_MODULE=bulklabel_flower`` with this folder on ``PYTHONPATH``
(docker-compose.yml's ``flower`` service, deploy/k8s/optional/flower.yaml). The broker URL
comes from ``BULKLABEL_REDIS_URL``, like every other bulklabel process, so no password is
on a command line. Workers and chunks reach Flower as task events; the queues do not:
``BULKLABEL_FLOWER_QUEUES`` (comma-separated) names the queues whose lengths Flower's Broker
page and ``/api/queues/length`` show, since bulklabel workers take no remote control and so
cannot tell Flower which queues they serve.
"""

import os

from kombu import Queue

broker_url = os.environ["BULKLABEL_REDIS_URL"]
task_queues = [Queue(name.strip()) for name in os.environ.get("BULKLABEL_FLOWER_QUEUES", "bulklabel").split(",")
               if name.strip()]
task_default_queue = task_queues[0].name if task_queues else "bulklabel"
accept_content = ["json"]  # as the workers: never unpickle what is on the queue
