"""Exact JSON numbers for Decimal values: json.dumps writes a Decimal as a float would, or not
at all; jsonb numbers beyond int and float come back from the database as Decimal.

Reading: :data:`exact` parses JSON text with every number kept as written: an int, a float
when the float is exactly the number, else a Decimal (json.loads would turn 0.1000000000000000000001
into 0.1, 1e400 into inf, 1e-400 into 0.0, and refuse an integer of more than 4300 digits).

A finite Decimal goes through ``json.dumps`` (as its ``default=``) as a marked string, and
:func:`unmarked` then turns each marked string into the number it is. The mark starts with NUL,
which neither text nor jsonb can hold, so no string from the database is mistaken for one.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

__all__ = ["exact", "exact_float", "exact_int", "fits_numeric", "marked", "unmarked"]

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


def exact_int(text: str) -> int | Decimal:
    """A JSON integer: an int, or a Decimal beyond what int() converts (4300 digits)."""
    try:
        return int(text)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits())
        return Decimal(text)


def exact_float(text: str) -> float | Decimal:
    """A JSON number with a fraction or an exponent: a float if it is exactly that float."""
    value = float(text)
    if math.isinf(value) or Decimal(repr(value)) != Decimal(text):
        return Decimal(text)  # more digits than a float holds, or beyond its range: kept exact
    return value


# What PostgreSQL's numeric, and so a jsonb number, holds: 131072 digits before the point,
# 16383 after it; beyond, the server refuses the whole statement (value overflows numeric format).
NUMERIC_DIGITS_BEFORE = 131072
NUMERIC_DIGITS_AFTER = 16383


def fits_numeric(value: Decimal) -> bool:
    """Whether the finite Decimal ``value`` is a number jsonb can store."""
    exponent = value.as_tuple().exponent  # an int: 'n', 'N' and 'F' are the non-finite ones
    return (
        isinstance(exponent, int)
        and value.adjusted() < NUMERIC_DIGITS_BEFORE
        and exponent >= -NUMERIC_DIGITS_AFTER
    )


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# NaN and Infinity, which json.loads takes, are no JSON (and jsonb refuses them).
exact = json.JSONDecoder(parse_int=exact_int, parse_float=exact_float, parse_constant=_not_json)
