"""The development seed: the demo tenant that ``make seed`` and ``make demo`` create."""

from __future__ import annotations

from typing import Any

import psycopg

from dbtools import tenants

DEMO_SLUG = "demo"
DEMO_NAME = "Demo Tenant"


def seed(conn: psycopg.Connection[Any]) -> tuple[tenants.Tenant, bool]:
    """Create the demo tenant unless it exists; return it and whether it was created.

    Idempotent and safe when several runs race: an existing demo tenant is left untouched.
    """
    return tenants.get_or_create(conn, DEMO_SLUG, DEMO_NAME)
