"""Dataclass-driven argparse: one frozen dataclass per command, its field help becomes --help.

Each field carries ``metadata={"help": ...}``; the CLI builds flags from the fields, parses, and
constructs the dataclass, whose ``__post_init__`` validates values and names the flag at fault.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
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


def save_resolved(config: Any, path: str | Path) -> None:
    """Write the resolved config next to a command's output (house style: reproducible runs)."""
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2, default=str) + "\n")


def _base_type(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _base_type(args[0])
    if kind in (str, int, float):
        return kind
    if kind is Path:
        return Path
    return str


def run_command(prog: str, doc: str | None, cls: type[T], run: "typing.Callable[[T], str]",
                argv: list[str] | None = None, log_level: int = 20) -> int:
    """The whole main() of a one-dataclass command: parse, configure logging, run, print its
    one-line result; an RLRCError becomes ``prog: error: ...`` on stderr and exit status 2."""
    import logging
    import sys

    from rlrc_runtime.errors import RLRCError

    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, cls)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        message = run(from_namespace(cls, ns))
    except RLRCError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0
