"""What a command module declares, and the context its handlers run in.

Each module of :mod:`dbtools.cli` declares its commands once, next to their handlers::

    commands = Commands()
    commands.group("tenants", help="list, show and change tenants", example="dbtools tenants list")

    @commands.command(
        "tenants show",
        help="one tenant",
        example="dbtools --json tenants show acme",
        arguments=[argument("slug")],
    )
    def show(ctx: Context, slug: str) -> int: ...

A handler gets the :class:`Context` and its own arguments as keyword parameters, and returns an
exit code; errors it raises are mapped to exit codes by :mod:`dbtools.cli.exits`. Handlers
import heavy modules (psycopg, pydantic, yoyo) themselves, so ``dbtools --help`` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from dbtools.config import Target

Handler = Callable[..., int]


@dataclass(frozen=True)
class Argument:
    """One ``add_argument`` call: its flags (or name) and options, as argparse takes them."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def argument(*flags: str, **options: Any) -> Argument:
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    """A command: the words that call it (``"tenants show"``), its help, its example, its
    arguments and its handler."""

    path: str
    help: str
    example: str
    handler: Handler
    arguments: tuple[Argument, ...] = ()


@dataclass(frozen=True)
class Group:
    """A word that gathers commands (``tenants``), with its own help and example."""

    name: str
    help: str
    example: str


class Commands:
    """The groups and commands one module declares."""

    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.commands: list[Command] = []

    def group(self, name: str, *, help: str, example: str) -> None:
        self.groups.append(Group(name, help, example))

    def command(
        self,
        path: str,
        *,
        help: str,
        example: str,
        arguments: tuple[Argument, ...] | list[Argument] = (),
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated function as the handler of the command ``path``."""

        def register(handler: Handler) -> Handler:
            self.commands.append(Command(path, help, example, handler, tuple(arguments)))
            return handler

        return register


class Context:
    """What every handler gets: the global options, the database target (resolved once, on
    first use), connections, and output that honours ``--json``."""

    def __init__(self, *, json: bool = False, debug: bool = False, database_url: str | None = None):
        self.json = json
        self.debug = debug
        self.database_url = database_url
        self._target: Target | None = None

    def target(self) -> Target:
        """The database to work on; starting the embedded cluster, and saying so, when nothing
        is configured (:func:`dbtools.config.resolve`)."""
        if self._target is None:
            from dbtools import config

            self._target = config.resolve(
                self.database_url, origin="--database-url", note=self.note
            )
        return self._target

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection to the target. The command owns it, so what is the
        caller's to retry in the library (timeouts, serialization failures) is mapped to
        dbtools errors here."""
        import psycopg

        from dbtools import db

        with db.connect(self.target(), autocommit=True) as conn:
            try:
                yield conn
            except psycopg.Error as exc:
                mapped = db.error_for(exc, conn)
                if mapped is None:
                    raise
                raise mapped from exc

    def emit(self, document: Any, human: str) -> None:
        """Print ``document`` as JSON with ``--json``, else the human text."""
        if self.json:
            print(json_text(document, indent=2), flush=True)
        elif human:
            say(human)

    def note(self, message: str) -> None:
        """Progress for people (stdout); silent with ``--json`` so stdout stays one document."""
        if not self.json:
            say(message)


def say(message: str = "", *, err: bool = False, end: str = "\n") -> None:
    print(message, file=sys.stderr if err else sys.stdout, end=end, flush=True)


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``...), for text meant for a
    terminal: a tenant name must not move the cursor or recolour the screen."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


# C1 control characters (U+007F-U+009F; U+009B is an 8-bit CSI): json.dumps escapes only the
# C0 ones when it writes UTF-8. They can only stand inside strings, where \uXXXX means the same.
_c1_control = re.compile("[\x7f-\x9f]")


def _json_default(value: object) -> object:
    from dbtools.jsonnumbers import marked

    number = marked(value)
    if number is not None:
        return number
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON for output: UTF-8 (not ASCII escapes), numbers of any size written
    exactly, and no control character left raw, so that it is safe on a terminal."""
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False, default=_json_default)
    except RecursionError:  # settings nested deeper than Python's recursion limit: compact
        text = _dumps_deep(value)
    from dbtools.jsonnumbers import unmarked

    text = unmarked(text)
    if not text.isascii():
        text = _c1_control.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


class _Raw(str):
    """Output text of _dumps_deep, as opposed to a value still to encode."""


def _dumps_deep(value: Any) -> str:
    """``json.dumps(value)`` as json_text writes it, with an explicit stack instead of
    recursion (jsonb allows nesting thousands of levels deep)."""
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            parts.append(item)
        elif isinstance(item, dict):
            stack.append(_Raw("}"))
            for n, (key, inner) in enumerate(reversed(list(item.items()))):
                if n:
                    stack.append(_Raw(", "))
                stack.append(inner)
                stack.append(_Raw(json.dumps(str(key), ensure_ascii=False) + ": "))
            stack.append(_Raw("{"))
        elif isinstance(item, list | tuple):
            stack.append(_Raw("]"))
            for n, inner in enumerate(reversed(item)):
                if n:
                    stack.append(_Raw(", "))
                stack.append(inner)
            stack.append(_Raw("["))
        else:
            parts.append(json.dumps(item, ensure_ascii=False, default=_json_default))
    return "".join(parts)


def table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns, the first row being the header. Cells are shown through
    :func:`printable`: a cell holding a control character cannot move the cursor."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
