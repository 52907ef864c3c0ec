"""``bulklabel snapshot``: the standing "labels as of now" table of a destination.

One record per source (``bulklabel.latest``): its latest successful label across every job
in DEST by the model asked for, or its latest error. Reads storage only: no Redis needed.
"""

from __future__ import annotations

import sys

from bulklabel.latest import Latest
from bulklabel.sinks import open_sink, output_format
from bulklabel.storage import open_storage


def snapshot(dest: str, out: str, model: str | None = None) -> dict:
    output_format(out)
    latest = Latest(open_storage(dest), model)
    if not latest.model_given:
        print(f"bulklabel: snapshot of the labels of model {latest.model} (the newest job's; choose with --model)",
              file=sys.stderr)
    sink = open_sink(out)
    try:
        for batch in latest:
            sink.write(batch)
    finally:
        sink.close()
    print(f"bulklabel: snapshot: {latest.records} sources ({latest.errors} with errors only) from "
          f"{latest.used_jobs} of {len(latest.jobs)} jobs into {out}", file=sys.stderr)
    return {"records": latest.records, "errors": latest.errors, "jobs": latest.used_jobs,
            "model": latest.model, "out": out}
