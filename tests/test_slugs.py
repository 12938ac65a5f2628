"""The Python slug rule (dbtools.slugs) against the real tenants_slug_format_check constraint."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors, sql

from dbtools import slugs, tenants
from dbtools.errors import DbToolsError, InvalidSlug, InvalidTenant, ReservedSlug
from dbtools.slugs import RESERVED_SLUGS, is_valid_slug, validate_new_slug, validate_slug

Conn = psycopg.Connection[Any]

SLUG_FORMAT_CHECK = "tenants_slug_format_check"
SLUG_RESERVED = "tenants_slug_reserved"
INSERT = "INSERT INTO tenants (slug, name) VALUES (%(slug)s, 'Tenant')"


def database_accepts(conn: Conn, slug: str) -> bool:
    """Whether the CHECK constraint lets ``slug`` in; the insert is always rolled back."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(INSERT, {"slug": slug})
    except errors.CheckViolation as exc:
        if exc.diag.constraint_name == SLUG_FORMAT_CHECK:
            return False
        if exc.diag.constraint_name == SLUG_RESERVED:  # well formed: the format check is later
            return True
        raise
    return True


def assert_same_verdict(conn: Conn, slug: str) -> None:
    assert database_accepts(conn, slug) == is_valid_slug(slug), repr(slug)


# Characters that a slug rule could plausibly get wrong: uppercase, separators, whitespace,
# letters that case-fold to ASCII (dotless i, long s, Kelvin sign), digits that are not ASCII
# (fullwidth, Arabic-Indic) and an emoji, mixed with plenty of the allowed characters.
TRICKY_CHARACTERS = "AZ_ .\n\r\t\u00e9\u0131\u017f\u212a\uff10\u0663\U0001f600"
TRICKY_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-" + TRICKY_CHARACTERS
SLUG_SHAPED = st.from_regex(slugs.SLUG_PATTERN, fullmatch=True)


@st.composite
def almost_slugs(draw: st.DrawFn) -> str:
    """A valid slug with one tricky character put at its start, at its end or inside it."""
    slug = draw(SLUG_SHAPED)
    char = draw(st.sampled_from(TRICKY_CHARACTERS))
    where = draw(st.sampled_from(("start", "end", "inside")))
    if where == "start":
        return char + slug
    if where == "end":
        return slug + char
    at = draw(st.integers(min_value=1, max_value=len(slug) - 1))
    return slug[:at] + char + slug[at:]


PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@PROPERTY_SETTINGS
@given(slug=st.text(alphabet=TRICKY_ALPHABET, min_size=0, max_size=55))
def test_python_and_database_agree_on_tricky_strings(conn: Conn, slug: str) -> None:
    assert_same_verdict(conn, slug)


@PROPERTY_SETTINGS
@given(slug=SLUG_SHAPED)
def test_python_and_database_agree_on_slug_shaped_strings(conn: Conn, slug: str) -> None:
    assert_same_verdict(conn, slug)


@PROPERTY_SETTINGS
@given(slug=almost_slugs())
def test_python_and_database_agree_on_slugs_with_one_tricky_character(
    conn: Conn, slug: str
) -> None:
    assert_same_verdict(conn, slug)


# PostgreSQL text cannot hold NUL (psycopg refuses to send it) and UTF-8 cannot encode lone
# surrogates, so neither string could ever reach the constraint: they are left out.
@PROPERTY_SETTINGS
@given(slug=st.text(st.characters(codec="utf-8", exclude_characters="\x00")))
def test_python_and_database_agree_on_any_text(conn: Conn, slug: str) -> None:
    assert_same_verdict(conn, slug)


def test_trailing_newline_is_rejected_by_python_and_database(conn: Conn) -> None:
    # The trap the rule must avoid: re.match with "$" accepts a trailing newline.
    assert re.match(f"^{slugs.SLUG_PATTERN}$", "abc\n") is not None
    assert not is_valid_slug("abc\n")
    assert not database_accepts(conn, "abc\n")


@pytest.mark.parametrize(
    ("slug", "valid"),
    [
        pytest.param("ab", False, id="2-chars"),
        pytest.param("abc", True, id="3-chars"),
        pytest.param("a" * 50, True, id="50-chars"),
        pytest.param("a" * 51, False, id="51-chars"),
    ],
)
def test_length_limits_agree_with_database(conn: Conn, slug: str, valid: bool) -> None:
    assert is_valid_slug(slug) is valid
    assert database_accepts(conn, slug) is valid


def test_validate_slug_returns_a_valid_slug() -> None:
    assert validate_slug("acme-corp-2") == "acme-corp-2"


@pytest.mark.parametrize(
    ("slug", "reason"),
    [
        pytest.param("ab", "must be 3 to 50 characters long, not 2", id="too-short"),
        pytest.param("a" * 51, "must be 3 to 50 characters long, not 51", id="too-long"),
        pytest.param("", "must be 3 to 50 characters long, not 0", id="empty"),
        pytest.param("-acme", "must not start or end with a hyphen", id="leading-hyphen"),
        pytest.param("acme-", "must not start or end with a hyphen", id="trailing-hyphen"),
        pytest.param("Acme", "lowercase letters a-z, digits and hyphens", id="uppercase"),
        pytest.param("abc\n", "not '\\n'", id="trailing-newline"),
        pytest.param("acme_corp", "not '_'", id="underscore"),
    ],
)
def test_validate_slug_says_why_a_string_is_invalid(slug: str, reason: str) -> None:
    with pytest.raises(InvalidSlug) as caught:
        validate_slug(slug)
    assert caught.value.slug == slug
    assert reason in caught.value.reason
    assert repr(slug) in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize("value", [None, 123, b"acme", ["acme"]], ids=repr)
def test_non_string_is_not_a_valid_slug(value: object) -> None:
    assert is_valid_slug(value) is False


@pytest.mark.parametrize("value", [None, 123, b"acme", ["acme"]], ids=repr)
def test_validate_slug_rejects_non_string(value: object) -> None:
    with pytest.raises(InvalidSlug, match="a slug is a string, not") as caught:
        validate_slug(value)
    assert caught.value.slug == value


def test_invalid_slug_is_a_value_error_and_a_dbtools_error() -> None:
    with pytest.raises(InvalidSlug) as caught:
        validate_slug("Not A Slug")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, DbToolsError)


# --- reserved slugs ----------------------------------------------------------------------------


def test_the_python_list_of_reserved_slugs_is_the_seeded_sql_rows(conn: Conn) -> None:
    rows = conn.execute("SELECT slug FROM reserved_slugs").fetchall()
    assert {slug for (slug,) in rows} == RESERVED_SLUGS
    assert {"www", "api", "admin", "app", "mail", "status", "docs", "support"} <= RESERVED_SLUGS
    assert "demo" not in RESERVED_SLUGS


@pytest.mark.parametrize("slug", sorted(RESERVED_SLUGS))
def test_validate_new_slug_refuses_a_reserved_slug(slug: str) -> None:
    with pytest.raises(ReservedSlug) as caught:
        validate_new_slug(slug)
    assert isinstance(caught.value, InvalidSlug)
    assert caught.value.slug == slug
    assert "reserved" in str(caught.value)
    assert validate_slug(slug) == slug  # still a valid slug: lookups of old tenants work


def test_validate_new_slug_accepts_demo_and_refuses_what_validate_slug_refuses() -> None:
    assert validate_new_slug("demo") == "demo"
    with pytest.raises(InvalidSlug) as caught:
        validate_new_slug("Not A Slug")
    assert not isinstance(caught.value, ReservedSlug)


# --- the name rule: Python (tenants.validate_name) against the database's constraints ----------

NAME_CONSTRAINTS = {
    "tenants_name_not_blank_check",
    "tenants_name_visible_check",
    "tenants_name_control_check",
    "tenants_name_length_check",
}
INSERT_NAME = "INSERT INTO tenants (slug, name) VALUES ('acme', %(name)s)"


def database_accepts_name(conn: Conn, name: str) -> bool:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(INSERT_NAME, {"name": name})
    except errors.CheckViolation as exc:
        if exc.diag.constraint_name in NAME_CONSTRAINTS:
            return False
        raise
    return True


def python_accepts_name(name: str) -> bool:
    try:
        tenants.validate_name("acme", name)
    except InvalidTenant:
        return False
    return True


# Blank, format and invisible characters, controls (ESC, BEL, CR, DEL, C1 CSI), and visible ones.
NAME_ALPHABET = (
    " \t\n\r\x1b\x07\x7f\x9b\x85\xa0\xad\u200b\u200d\u202e\u2060\u2800\u3000\u3164\ufeff\uffa0"
    "\U000e0041\U0001d173aZ\u00e9\U0001f600-"
)


@PROPERTY_SETTINGS
@given(name=st.text(alphabet=NAME_ALPHABET, min_size=0, max_size=12))
def test_python_and_database_agree_on_names(conn: Conn, name: str) -> None:
    assert database_accepts_name(conn, name) == python_accepts_name(name), repr(name)


@PROPERTY_SETTINGS
@given(name=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20))
def test_python_and_database_agree_on_any_name(conn: Conn, name: str) -> None:
    assert database_accepts_name(conn, name) == python_accepts_name(name), repr(name)


def test_python_and_database_agree_on_every_one_character_name(conn: Conn) -> None:
    """Every code point a name can hold, alone: the database evaluates the name constraints of
    the catalog over all of them in one query."""
    definitions = conn.execute(
        "SELECT pg_get_expr(conbin, conrelid) FROM pg_constraint"
        " WHERE conrelid = 'tenants'::regclass AND conname = ANY(%s)",
        (sorted(NAME_CONSTRAINTS),),
    ).fetchall()
    assert len(definitions) == len(NAME_CONSTRAINTS)
    rule = sql.SQL(" AND ").join(sql.SQL(f"({expr})") for (expr,) in definitions)
    refused = conn.execute(
        sql.SQL(
            "SELECT array_agg(c ORDER BY c) FROM generate_series(1, 1114111) c,"
            " LATERAL (SELECT chr(c) AS name) n"
            " WHERE (c < 55296 OR c > 57343) AND NOT ({})"
        ).format(rule)
    ).fetchone()
    assert refused is not None
    by_python = [
        c
        for c in range(1, 0x110000)
        if not 0xD800 <= c <= 0xDFFF and not python_accepts_name(chr(c))
    ]
    assert refused[0] == by_python
    assert {0x1B, 0x9B, 0x200B, 0x2800, 0x3164, 0xFEFF} <= set(by_python)
    assert {0x41, 0xE9, 0x1F600}.isdisjoint(by_python)


def test_every_format_character_of_this_python_counts_as_blank() -> None:
    """The spelled-out list covers general category Cf as far as this Python's Unicode knows it."""
    formats = [c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    assert formats
    assert [c for c in formats if python_accepts_name(chr(c))] == []
