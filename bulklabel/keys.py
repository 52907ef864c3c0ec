"""Every Redis key bulklabel uses, in one place.

    bulklabel:job:<id>                 hash: state, totals, counters, times, dest, queue
    bulklabel:job:<id>:chunks_done     set of chunk numbers counted (gates the counters)
    bulklabel:job:<id>:deliveries      hash: chunk number → times a worker started it
    bulklabel:job:<id>:models          set of model ids that labeled the job
    bulklabel:job:<id>:workers         set of worker names that labeled the job
    bulklabel:job:<id>:lister          exists while a submit is listing the job (refreshed, expires)
    bulklabel:jobs                     sorted set: job ids by submission time
    bulklabel:worker:<name>            worker heartbeat (JSON, expires when the worker is gone)
    bulklabel:dead:<queue>             list: messages no worker could use, with the reason (JSON)
    bulklabel:scheduler:lease          the scheduler lease: a redis-py Lock token with a TTL its holder renews
    bulklabel:scheduler:holder         who holds the lease (JSON host, pid, since; same TTL)
    bulklabel:schedule:<name>:last     a scheduled job's latest slot handled and its latest run (JSON)
    bulklabel:schedule:<name>:runs     list: a scheduled job's slots and their outcomes, newest first (JSON)

Celery's own queue keys are named after the queue (default ``bulklabel``).
"""

PREFIX = "bulklabel"
JOBS = f"{PREFIX}:jobs"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def chunks_done(job_id: str) -> str:
    return f"{job(job_id)}:chunks_done"


def deliveries(job_id: str) -> str:
    return f"{job(job_id)}:deliveries"


def models(job_id: str) -> str:
    return f"{job(job_id)}:models"


def workers(job_id: str) -> str:
    return f"{job(job_id)}:workers"


def lister(job_id: str) -> str:
    return f"{job(job_id)}:lister"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def dead_letter(queue: str) -> str:
    return f"{PREFIX}:dead:{queue}"


WORKER_PATTERN = f"{PREFIX}:worker:*"

SCHEDULER_LEASE = f"{PREFIX}:scheduler:lease"
SCHEDULER_HOLDER = f"{PREFIX}:scheduler:holder"


def schedule_last(name: str) -> str:
    return f"{PREFIX}:schedule:{name}:last"


def schedule_runs(name: str) -> str:
    return f"{PREFIX}:schedule:{name}:runs"
