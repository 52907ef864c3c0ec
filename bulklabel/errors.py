"""One error root for the project.

``BulkLabelError`` and its subclasses carry messages meant for a person: what was
received and what to do about it. The command line prints them without a traceback and
exits with ``exit_code``.
"""


class BulkLabelError(Exception):
    """Root of every error bulklabel raises on purpose."""

    exit_code = 1


class ConfigError(BulkLabelError):
    """A bad flag, environment variable or combination of options."""

    exit_code = 2


class SourceError(BulkLabelError):
    """A source given on the command line does not exist or cannot be listed."""

    exit_code = 2


class ModelError(BulkLabelError):
    """The model cannot be found, loaded or used."""

    exit_code = 3


class ImageError(Exception):
    """One image cannot be used; the job records the reason and goes on.

    Deliberately not a ``BulkLabelError``: it never ends a job.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class MissingDependency(ConfigError):
    """An optional package is needed for what was asked."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'bulklabel[{extra}]'  (or: pip install {package})"
        )
