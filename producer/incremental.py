"""What an incremental submit skips: the sources DEST's label index already holds.

``prepare`` picks the model to diff against, indexes the ended jobs of DEST that are not
indexed yet (a failed or cancelled job adds what it finished; a Redis flush loses
nothing: the index is built from the shards), and loads that model's index. The listing
then goes through ``Skipper.filter``: a source whose (location, fingerprint) is in the
index is skipped; a changed file, a new file, or any file under a new model is labeled.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bulklabel.errors import ConfigError
from bulklabel.jobs import ENDED, JobNotFound, JobStore


@dataclass
class Plan:
    model_id: str | None   # the model whose index is used (None: no index yet, label everything)
    skipper: object        # bulklabel.index.Skipper
    indexed_jobs: list[str]  # jobs indexed now, by catch-up
    entries: int           # entries in the index


def diff_model(jobs: JobStore, storage, queue: str, model_id: str | None) -> str | None:
    """The model the job will be labeled with: ``--model-id``, else the one the live workers
    of ``queue`` serve, else the model that most recently indexed DEST (None: none yet)."""
    if model_id:
        return model_id
    served = sorted({w.get("model") for w in jobs.live_workers(queue)} - {None})
    if len(served) > 1:
        raise ConfigError(f"the workers on queue {queue!r} serve different models ({', '.join(served)}): "
                          "serve one model per queue, or name the one to diff against with --model-id")
    if served:
        return served[0]
    return newest_model(storage)


def newest_model(storage) -> str | None:
    """The model whose index in DEST was written last (its newest segment's header), or None."""
    from bulklabel.index import INDEX_DIR
    from bulklabel.index.layout import SEGMENT_NAME
    from bulklabel.index.segment import SegmentError, decode

    newest: tuple[str, str] | None = None  # (segment name, key): names start with their time
    for folder in storage.children(INDEX_DIR):
        for key in storage.list(f"{INDEX_DIR}/{folder}/"):
            name = key.rsplit("/", 1)[-1]
            if SEGMENT_NAME.fullmatch(name) and (newest is None or name > newest[0]):
                newest = (name, key)
    if newest is None:
        return None
    try:
        return decode(newest[0], storage.read(newest[1])).model
    except (FileNotFoundError, SegmentError):  # compacted away meanwhile, or damaged: look again
        return None


def finished(jobs: JobStore, job_id: str) -> bool:
    """Whether a job can write no more shards: it ended, or Redis forgot it."""
    try:
        return jobs.get(job_id)["state"] in ENDED
    except JobNotFound:
        return True


def prepare(jobs: JobStore, storage, queue: str, model_id: str | None) -> Plan:
    from bulklabel.index import LabelIndex, Skipper, catch_up

    model = diff_model(jobs, storage, queue, model_id)
    if model is None:
        print("bulklabel: --incremental: no label index in this destination yet and no worker on the queue "
              "to name the model: labeling every source", file=sys.stderr)
        return Plan(None, Skipper(None), [], 0)
    index = LabelIndex(storage, model)
    view = index.load()
    indexed = catch_up(storage, model, lambda job: finished(jobs, job), view=view)  # updates the view
    print(f"bulklabel: --incremental: skipping what model {model} already labeled here "
          f"({len(view)} entries{f'; indexed {len(indexed)} earlier jobs' if indexed else ''})", file=sys.stderr)
    return Plan(model, Skipper(view), indexed, len(view))
