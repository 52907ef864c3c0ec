"""Commands that close the loop with people: export (for review), import-reviews, report."""

from __future__ import annotations

import argparse
import os
import sys

from .. import settings
from ..errors import ConfigError
from ..options import Option, add_options
from ..options.distributed import REDIS

SOURCE_HELP = """\
SOURCE is any of: a results file (.jsonl/.csv/.parquet from classify, results or snapshot);
a job folder DEST/<job_id>/ (local or s3://); a DEST that jobs wrote to (the latest label of
every source, by --model ID, default the newest job's model: the snapshot of an incremental
archive); or a job id (its destination and speed come from Redis)."""

EXPORT_HELP = f"""\
Export the images people should check, with the model's label as a pre-annotation.

{SOURCE_HELP}

--format labelstudio writes Label Studio's import format: a JSON list of tasks, one per
image, data.image (the URL the reviewer's browser opens), data.source (where the image is),
data.label, data.score and data.review (doubtful or sample) as Data Manager columns, and one
prediction: a 'choices' result with the top-1 label, score = top-1 score, model_version =
the model id. --config-out writes the labeling config that matches it (an <Image> and a
<Choices> with every class: from --classes MODEL_OR_LABELS_FILE, in the model's order, else
the labels the records show). Error records are left out and counted.

--format jsonl|csv|parquet writes the selected records instead (for other tools).

Images (--image-url):
  auto           s3:// stays s3://, local files use local-files (the default)
  s3             s3:// URIs: Label Studio presigns them through the project's S3 storage
  presign[=S]    presigned HTTPS URLs made here, valid S seconds (default 604800, 7 days)
  local-files    /data/local-files/?d=<path under --image-root>: Label Studio serves them
                 (LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true,
                 LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<--image-root>)
  prefix=URL     URL + the path under --image-root, for images you serve yourself

examples:
  bulklabel export s3://photos/labels --model flowers@1a2b3c4d5e6f --review-below 0.6 \\
      --out tasks.json --config-out config.xml --classes flowers.keras
  bulklabel export 20261122-101500-3f2a --review-below 0.5 --sample 200 --out tasks.json
  bulklabel export predictions.jsonl --out review.json --image-url prefix=https://img.internal/ \\
      --image-root /archive
  bulklabel export /shared/labels/nightly-20261122T0200 --format csv --review-below 0.3 --out doubtful.csv

Then in Label Studio: create a project with config.xml as its labeling interface, import
tasks.json, sort by the 'score' column, review, and export the project as JSON for
'bulklabel import-reviews'."""

IMPORT_HELP = """\
Turn a Label Studio JSON export of a reviewed project into a dataset for 'bulklabel train',
and measure how far the model and the reviewers agree.

Each task's image comes from data.source (written by 'bulklabel export'), else data.image
when it is an s3:// URI, a local path, or a local-files/prefix URL (give the same
--image-url and --image-root as the export). Tasks without an annotation, with every
annotation skipped (cancelled), or whose annotators disagree (a conflict; --on-conflict
majority lets a strict majority decide) are left out and counted; a ground-truth annotation
decides where there is one.

DATA (--out, a new folder) gets one folder per class:
  --link   symbolic links to the local images (default for local images)
  --copy   copies (local or s3://)
  --list   DATA/lists/<class>.txt, one location per line (default when images are on S3)

The agreement on the reviewed images (accuracy, per-class precision and recall, the
confusion matrix, the most frequent corrections) is printed and written, with the counts,
to DATA/review-summary.json (or --report FILE).

examples:
  bulklabel import-reviews project-7-at-2026-11-23.json --out reviewed/
  bulklabel train reviewed/ --base flowers.keras --out flowers-v2.keras --epochs 5"""

REPORT_HELP = f"""\
Write one self-contained HTML page about a job: the summary (model, counts, errors, speed),
images per label, the top-1 score distribution, thumbnails per label, the lowest-confidence
images and the errors with their reasons. It opens with no network. Counts and charts cover
every record (streamed); thumbnails a bounded sample per label (--per-label).

{SOURCE_HELP}

examples:
  bulklabel report 20261122-101500-3f2a --out report.html
  bulklabel report s3://photos/labels --model flowers@1a2b3c4d5e6f --out today.html
  bulklabel report predictions.jsonl --out report.html --per-label 24"""

MODEL = Option(("--model",), metavar="ID", env=None,
               help="with a DEST as SOURCE: the model whose labels to take (default: the newest job's)")
FORMAT = Option(("--format",), metavar="FORMAT", default="labelstudio", env=None,
                choices=("labelstudio", "jsonl", "csv", "parquet"),
                help="labelstudio (default), jsonl, csv or parquet")
EXPORT_OUT = Option(("--out", "-o"), metavar="FILE", required=True, env=None,
                    help="the task list (.json) or records file to write")
REVIEW_BELOW = Option(("--review-below",), metavar="P", env=None, parse=lambda v, what: None if v is None
                      else settings.number(v, what),
                      help="only images whose top-1 score is below P, lowest first")
SAMPLE = Option(("--sample",), metavar="N", env=None,
                parse=lambda v, what: None if v is None else settings.positive_int(v, what),
                help="N images at random (of those at or above --review-below, if given): an audit")
SEED = Option(("--seed",), metavar="N", default="0", env=None,
              parse=lambda v, what: settings.whole_number(v, what, 0), help="seed of --sample (default 0)")
IMAGE_URL = Option(("--image-url",), metavar="MODE", default="auto", env=None,
                   help="auto (default), s3, presign[=SECONDS], local-files or prefix=URL")
IMAGE_ROOT = Option(("--image-root",), metavar="DIR", default="/", env=None,
                    help="the folder local-files / prefix URLs are relative to (default /)")
CONFIG_OUT = Option(("--config-out",), metavar="FILE", env=None, help="write the matching labeling config (XML)")
CLASSES = Option(("--classes",), metavar="MODEL|FILE", env=None,
                 help="the model file (its metadata), keras:NAME (ImageNet) or a labels file (one class per "
                      "line) for --config-out")
FROM_NAME = Option(("--from-name",), metavar="NAME", default="choice", env=None,
                   help="the Choices control's name (default choice)")
TO_NAME = Option(("--to-name",), metavar="NAME", default="image", env=None,
                 help="the Image object's name (default image)")

DATA_OUT = Option(("--out", "-o"), metavar="DATA", required=True, env=None,
                  help="the dataset folder to create (new or empty)")
ON_CONFLICT = Option(("--on-conflict",), metavar="POLICY", default="skip", env=None, choices=("skip", "majority"),
                     help="annotators disagreeing: skip the task (default) or take a strict majority")
IMPORT_FROM = Option(("--from-name",), metavar="NAME", env=None,
                     help="the Choices control holding the class (default: the only one used)")
SUMMARY_OUT = Option(("--report",), metavar="FILE", env=None,
                     help="where to write the summary JSON (default DATA/review-summary.json)")

REPORT_OUT = Option(("--out", "-o"), metavar="FILE", required=True, env=None, help="the HTML file to write")
PER_LABEL = Option(("--per-label",), metavar="N", default="12", env=None, parse=settings.non_negative_int,
                   help="thumbnails per label (default 12; 0: none)")
LOWEST = Option(("--lowest",), metavar="N", default="40", env=None, parse=settings.non_negative_int,
                help="lowest-confidence images to show (default 40)")


def _sub(sub, name: str, help: str, description: str):
    return sub.add_parser(name, help=help, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_export(sub) -> None:
    p = _sub(sub, "export", "export doubtful labels for review (Label Studio)", EXPORT_HELP)
    p.add_argument("source", metavar="SOURCE")
    add_options(p, EXPORT_OUT, FORMAT, REVIEW_BELOW, SAMPLE, SEED, MODEL, title="what")
    add_options(p, IMAGE_URL, IMAGE_ROOT, CONFIG_OUT, CLASSES, FROM_NAME, TO_NAME, title="Label Studio")
    add_options(p, REDIS)
    p.set_defaults(run=_export)


def add_import_reviews(sub) -> None:
    p = _sub(sub, "import-reviews", "turn a Label Studio export into a training dataset", IMPORT_HELP)
    p.add_argument("export", metavar="EXPORT.json")
    add_options(p, DATA_OUT, ON_CONFLICT, IMPORT_FROM, IMAGE_URL, IMAGE_ROOT, SUMMARY_OUT)
    modes = p.add_mutually_exclusive_group()
    for mode, what in (("copy", "copy the images"), ("link", "link the local images (default for local)"),
                       ("list", "write DATA/lists/<class>.txt (default for S3)")):
        modes.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode, help=what)
    p.set_defaults(run=_import_reviews, mode=None)


def add_report(sub) -> None:
    p = _sub(sub, "report", "one self-contained HTML page about a job", REPORT_HELP)
    p.add_argument("source", metavar="SOURCE")
    add_options(p, REPORT_OUT, MODEL, PER_LABEL, LOWEST, REDIS)
    p.set_defaults(run=_report)


def _class_names(path: str | None) -> list[str] | None:
    if not path:
        return None
    if path.startswith("keras:"):  # a Keras Applications model: the ImageNet classes that ship with bulklabel
        from worker.inference.models.applications import imagenet_class_names

        return list(imagenet_class_names())
    if not os.path.exists(path):
        raise ConfigError(f"--classes {path}: no such file or folder")
    from worker.inference.metadata import read_metadata
    from worker.inference.models.loaded import read_labels

    if os.path.isfile(path) and not path.lower().endswith((".keras", ".h5", ".hdf5")):
        return read_labels(path)
    names = (read_metadata(path) or {}).get("class_names")
    if not names:
        raise ConfigError(f"--classes {path}: the model carries no class names; give a labels file")
    return list(names)


def _export(args: argparse.Namespace) -> int:
    from ..review.export import ExportOptions, check, run
    from ..review.image_urls import ImageUrls
    from ..review.select import Selection
    from ..review.source import open_records

    opts = ExportOptions(
        out=EXPORT_OUT.value(args), format=FORMAT.value(args),
        selection=Selection(REVIEW_BELOW.value(args), SAMPLE.value(args), SEED.value(args)),
        image_urls=ImageUrls(IMAGE_URL.value(args), IMAGE_ROOT.value(args)),
        from_name=FROM_NAME.value(args), to_name=TO_NAME.value(args), config_out=CONFIG_OUT.value(args),
        class_names=_class_names(CLASSES.value(args)))
    check(opts)
    run(open_records(args.source, model=MODEL.value(args), redis_url=REDIS.value(args)), opts)
    return 0


def _import_reviews(args: argparse.Namespace) -> int:
    from ..review.image_urls import ImageUrls
    from ..review.import_reviews import ImportOptions, run

    run(ImportOptions(export=args.export, out=DATA_OUT.value(args), mode=args.mode,
                      from_name=IMPORT_FROM.value(args), on_conflict=ON_CONFLICT.value(args),
                      image_urls=ImageUrls(IMAGE_URL.value(args), IMAGE_ROOT.value(args)),
                      report=SUMMARY_OUT.value(args)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..review.report import write_report
    from ..review.source import open_records

    out = REPORT_OUT.value(args)
    if not out.lower().endswith((".html", ".htm")):
        raise ConfigError(f"--out must end in .html. Received: {out!r}")
    records = open_records(args.source, model=MODEL.value(args), redis_url=REDIS.value(args))
    summary = dict(records.summary, source=args.source, kind=records.kind)
    stats = write_report(records.batches(), summary, out, per_label=PER_LABEL.value(args),
                         lowest=LOWEST.value(args))
    print(f"bulklabel: report: {stats.get('records', 0)} records, {stats.get('thumbnails', 0)} thumbnails "
          f"into {out}", file=sys.stderr)
    return 0
