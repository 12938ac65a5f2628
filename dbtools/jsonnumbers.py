"""Exact JSON numbers for Decimal values: json.dumps writes a Decimal as a float would, or not
at all; jsonb numbers beyond int and float come back from the database as Decimal.

A finite Decimal goes through ``json.dumps`` (as its ``default=``) as a marked string, and
:func:`unmarked` then turns each marked string into the number it is. The mark starts with NUL,
which neither text nor jsonb can hold, so no string from the database is mistaken for one.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["marked", "unmarked"]

_MARK = "\x00number:"
_MARKED = re.compile(r'"\\u0000number:([-+.0-9Ee]+)"')


def marked(value: object) -> str | None:
    """``value``'s marked string if it is a finite Decimal, else None."""
    if isinstance(value, Decimal) and value.is_finite():
        return f"{_MARK}{value}"
    return None


def unmarked(text: str) -> str:
    """``json.dumps`` output with every marked Decimal written as the number it is."""
    return _MARKED.sub(r"\1", text) if "\\u0000number:" in text else text
