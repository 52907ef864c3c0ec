"""``bulklabel report``: a job's records as one self-contained HTML page for people.

The summary (model, counts, errors, speed), images per label and the top-1 score
distribution as inline SVG charts, a contact sheet of embedded thumbnails per label, the
lowest-confidence images and the errors with their reasons. One streaming pass in bounded
memory (``tally``), thumbnails only for what the page shows (``thumbs``), every text from the
records escaped (``text``), no script and nothing fetched (``page``). Entry point:
``write_report`` (``write``).
"""

from .write import write_report

__all__ = ["write_report"]
