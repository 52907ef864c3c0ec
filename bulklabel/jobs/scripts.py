"""The job store's Lua scripts, read from the package data in ``lua/``."""

from __future__ import annotations

from functools import cache
from importlib import resources

# script name -> the shared helpers it calls (prepended, in order)
NEEDS: dict[str, tuple[str, ...]] = {
    "complete_chunk": ("complete_if_ready",),
    "finish_listing": ("complete_if_ready",),
    "start_chunk": (),
    "end_job": (),
    "add_chunk": (),
}
FILES = ("complete_if_ready", *NEEDS)


def read(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """Script ``name`` ready to run: its helpers followed by its own body."""
    return "\n".join(read(part) for part in (*NEEDS[name], name))
