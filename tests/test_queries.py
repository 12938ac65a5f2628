"""Every tenants query returns exactly the Tenant fields, in order: rows are mapped by position."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dbtools import tenants

PARAMS: dict[str, dict[str, Any]] = {
    "GET_BY_SLUG": {"slug": "acme"},
    "GET_BY_ID": {"id": "00000000-0000-0000-0000-000000000000"},
    "GET_MANY": {"slugs": ["acme"]},
    "LIST": {"after": "", "statuses": [], "limit": 10},
    "INSERT": {"slug": "other", "name": "Other", "settings": "{}"},
    "INSERT_IF_ABSENT": {"slug": "other", "name": "Other", "settings": "{}"},
    "UPDATE": {"slug": "acme", "name": "New", "settings": None},
    "SET_STATUS": {"slug": "acme", "status": "suspended"},
}


def test_columns_are_the_tenant_fields() -> None:
    assert tenants.COLUMNS == (
        "id",
        "slug",
        "name",
        "status",
        "settings",
        "created_at",
        "updated_at",
    )


@pytest.mark.parametrize("query", sorted(PARAMS))
def test_query_returns_the_tenant_columns_in_order(
    conn: psycopg.Connection[Any], query: str
) -> None:
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(getattr(tenants, query), PARAMS[query])
        assert cur.description is not None
        assert tuple(column.name for column in cur.description) == tenants.COLUMNS
