"""``dbtools schema dump|check``: the schema the migrations produce (``sql/schema/``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dbtools.cli.base import Commands, Context, argument
from dbtools.cli.exits import Exit
from dbtools.cli.migrations import checked_target

commands = Commands()
commands.group(
    "schema",
    help="the schema the migrations produce (sql/schema/)",
    example="dbtools schema dump\n  dbtools schema check",
)


def _existing_file(text: str) -> Path:
    path = Path(text)
    try:
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"no such file: {text}")
    except OSError as exc:  # a folder on the way that may not be searched
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    return path


_FILE_HELP = "schema file (default: sql/schema/schema.sql)"


@commands.command(
    "schema dump",
    help="write the migrations' schema to sql/schema/schema.sql",
    example="dbtools schema dump && git diff sql/schema/schema.sql",
    arguments=[argument("--file", type=Path, help=_FILE_HELP)],
)
def dump(ctx: Context, file: Path | None) -> int:
    from dbtools import localdb, schema
    from dbtools.errors import ConfigurationError

    if file is None and localdb.source_checkout() is None:  # never rewrite an installed package
        raise ConfigurationError(
            "dbtools runs from an installed package: give the file to write with --file"
        )
    path = file or schema.SCHEMA_FILE
    changed = schema.write(checked_target(ctx), path)
    ctx.emit(
        {"file": str(path), "changed": changed},
        f"wrote {path}" if changed else f"{path} is up to date",
    )
    return Exit.OK


@commands.command(
    "schema check",
    help="fail with a diff if the file or database differs",
    example='dbtools --database-url "$PROD_URL" schema check',
    arguments=[argument("--file", type=_existing_file, help=_FILE_HELP)],
)
def check(ctx: Context, file: Path | None) -> int:
    from dbtools import schema
    from dbtools.errors import SchemaDrift

    path = file or schema.SCHEMA_FILE
    try:
        schema.check(checked_target(ctx), path)
    except SchemaDrift as drift:
        differences = [{"subject": d.subject, "diff": d.diff} for d in drift.differences]
        ctx.emit(
            {"ok": False, "differences": differences},
            "".join(d.diff for d in drift.differences),
        )
        raise
    ctx.emit({"ok": True, "differences": []}, f"{path} and the database match the migrations")
    return Exit.OK
