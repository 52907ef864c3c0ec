"""The ``bulklabel`` command line: the composition root.

This package is the only place that imports both ``worker`` and ``producer``, and it does so
lazily, inside each command's handler, so the light commands never pay for TensorFlow.
Each command lives with its kind: ``local`` (classify, train, evaluate: in this process) and
``distributed`` (worker, submit, status, results) and ``review`` (export, import-reviews,
report). Options are declared once, in ``bulklabel.options``, and composed here; every one can also come from
``BULKLABEL_<OPTION>`` in the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import BulkLabelError
from . import distributed, local, review, schedule


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulklabel",
        description="Label whole image archives with a Keras image classifier.",
        epilog="Run 'bulklabel COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"bulklabel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    local.add_classify(sub)
    distributed.add_worker(sub)
    distributed.add_submit(sub)
    distributed.add_status(sub)
    distributed.add_cancel(sub)
    distributed.add_results(sub)
    distributed.add_snapshot(sub)
    distributed.add_exporter(sub)
    schedule.add_scheduler(sub)
    schedule.add_run_scheduled(sub)
    review.add_export(sub)
    review.add_import_reviews(sub)
    review.add_report(sub)
    local.add_train(sub)
    local.add_evaluate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BulkLabelError as exc:
        print(f"bulklabel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bulklabel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
