"""Dataclass-driven argparse: one frozen dataclass per command, its field help becomes --help.

Every CLI of the project is declared this way: ``run_command`` for a command, ``run_subcommands`` for
one with subcommands, ``combined_config`` when one command takes the options of several configs.

Each field carries ``metadata={"help": ...}``; the CLI builds flags from the fields, parses, and
constructs the dataclass, whose ``__post_init__`` validates values and names the flag at fault.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        positional = f.metadata.get("positional", False)
        flag = f.name if positional else "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        base = _base_type(kind)
        kwargs: dict[str, Any] = {"help": f"{help_text} (default: {default})" if not required else help_text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if positional:
            parser.add_argument(flag, type=base, **kwargs)
        else:
            parser.add_argument(flag, type=base, required=required, default=default, **kwargs)


def from_namespace(cls: type[T], ns: argparse.Namespace) -> T:
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


def combined_config(name: str, *classes: type, leading: tuple[tuple[str, type, Any], ...] = ()) -> type:
    """One frozen CLI dataclass with the ``leading`` (name, type, field) entries, then every field of
    ``classes`` (their help and defaults are the one source); pick each part back with ``split_config``."""
    entries: list[tuple[str, Any, Any]] = list(leading)
    seen = {e[0] for e in entries}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            if f.default is not dataclasses.MISSING:
                spec = dataclasses.field(default=f.default, metadata=f.metadata)
            elif f.default_factory is not dataclasses.MISSING:
                spec = dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
            else:
                spec = dataclasses.field(metadata=f.metadata)
            entries.append((f.name, hints[f.name], spec))
    return dataclasses.make_dataclass(name, entries, frozen=True, kw_only=True)


def split_config(args: Any, cls: type[T]) -> T:
    """The ``cls`` part of a ``combined_config`` value (validated by cls's own ``__post_init__``)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init})


def _base_type(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _base_type(args[0])
    if kind in (str, int, float):
        return kind
    if kind is Path:
        return Path
    return str


def run_command(prog: str, doc: str | None, cls: type[T], run: "typing.Callable[[T], str | None]",
                argv: list[str] | None = None, log_level: int = 20) -> int:
    """The whole main() of a one-dataclass command: parse, configure logging, run, print its
    one-line result; an RLRCError becomes ``prog: error: ...`` on stderr and exit status 2."""
    return run_subcommands(prog, doc, {"": Subcommand(cls, run)}, argv, log_level)


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """One subcommand: its config dataclass (flags, help, validation), what it runs, its one-line help."""

    config: type
    run: "typing.Callable[[Any], str | None]"
    help: str = ""


def run_subcommands(prog: str, doc: str | None, commands: "dict[str, Subcommand]", argv: list[str] | None = None,
                    log_level: int = 20) -> int:
    """main() of a command with subcommands (``{"": ...}`` alone = no subcommand): parse, configure
    logging (``-v`` for debug), build the chosen config, run it and print what it returns. Bad input
    (an RLRCError, raised by a config's validation or by the work) becomes ``prog [sub]: error: ...`` on
    stderr and exit status 2."""
    import logging
    import sys

    from rlrc_runtime.errors import RLRCError

    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if set(commands) == {""}:
        add_arguments(parser, commands[""].config)
        parser.set_defaults(_command="")
    else:
        sub = parser.add_subparsers(dest="_command", required=True, metavar="COMMAND")
        for name, command in commands.items():
            p = sub.add_parser(name, help=command.help, description=command.help or None)
            add_arguments(p, command.config)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else log_level, format="%(levelname)s %(name)s: %(message)s")
    name = ns._command
    label = f"{prog} {name}".strip()
    command = commands[name]
    try:
        message = command.run(from_namespace(command.config, ns))
    except RLRCError as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        return 2
    if message:
        print(message)
    return 0
