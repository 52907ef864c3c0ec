"""``Option``: one setting, declared once — flags, environment variables, default, parser, help.

An option set is a frozen dataclass whose fields are declared with ``setting(OPTION)``: the
field is the typed value, the option says how a person gives it. The command line adds
a set's options with ``add_options`` and builds the set with ``from_args``; code that runs
without a command line builds the dataclass directly and gets the same defaults.

Raw values are parsed after argparse, by the option's own parser, so a bad value from the
environment is reported with the variable's name and one from the command line with the
flag's, both as ``ConfigError`` (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import settings
from ..settings import FromEnv, origin

Parser = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    default: Any = None               # as a person would type it (parsed like any other value)
    parse: Parser = settings.text
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False              # a boolean: --x sets it, --no-x clears it
    env: tuple[str, ...] | None = ()  # () → BULKLABEL_<FLAG> for each long flag; None → no variable
    required: bool = False
    repeat: bool = False              # may be given several times: the parser gets a list (the
                                      # variable's value is one comma-separated string)

    @property
    def name(self) -> str:
        return self.flags[0]

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    def variables(self) -> tuple[str, ...]:
        if self.env is None:
            return ()
        return self.env or tuple(settings.env_name(f) for f in self.flags if f.startswith("--"))

    def raw_default(self) -> Any:
        """The environment's value (as ``FromEnv``, so errors name the variable), else the default."""
        for variable in self.variables():
            value = os.environ.get(variable)
            if value is not None:
                return FromEnv(value, variable)
        return self.default

    def add_to(self, parser) -> None:
        default = self.raw_default()
        shown = f" [${self.variables()[0]}]" if self.variables() else ""
        if self.switch:
            parser.add_argument(*self.flags, dest=self.dest, action="store_const", const=True,
                                default=default, help=self.help + shown)
            no = tuple("--no-" + f[2:] for f in self.flags if f.startswith("--"))
            parser.add_argument(*no, dest=self.dest, action="store_const", const=False,
                                help=f"turn {self.name} off (wins over the environment)")
            return
        if self.repeat:  # appended flags replace the environment's value (see ``value``)
            parser.add_argument(*self.flags, dest=self.dest, action="append", default=None,
                                metavar=self.metavar, help=self.help + shown)
            return
        parser.add_argument(*self.flags, dest=self.dest, default=default, metavar=self.metavar,
                            choices=self.choices, required=self.required and default is None,
                            help=self.help + shown)

    def value(self, args: argparse.Namespace) -> Any:
        raw = getattr(args, self.dest)
        if raw is None and self.repeat:
            raw = self.raw_default()
        value = self.parse(raw, origin(raw, self.name))
        return str(value) if isinstance(value, FromEnv) else value

    def default_value(self) -> Any:
        return self.parse(self.default, self.name)


def setting(option: Option) -> Any:
    """A dataclass field holding ``option``'s value (default: the option's parsed default)."""
    return dataclasses.field(default_factory=option.default_value, metadata={"option": option})


def options_of(cls) -> list[Option]:
    return [f.metadata["option"] for f in dataclasses.fields(cls) if "option" in f.metadata]


def add_options(parser, *sources, title: str | None = None) -> None:
    """Add option sets (dataclasses) and single ``Option``s to ``parser``, in a group if titled."""
    target = parser.add_argument_group(title) if title else parser
    for source in sources:
        for option in [source] if isinstance(source, Option) else options_of(source):
            option.add_to(target)


def from_args(cls, args: argparse.Namespace, **given):
    """Build option set ``cls`` from parsed arguments (``given`` fills fields without options)."""
    values = {f.name: f.metadata["option"].value(args)
              for f in dataclasses.fields(cls) if "option" in f.metadata}
    return cls(**values, **given)
