"""The demo seed: creates the demo tenant once, then changes nothing, also when runs race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from dbtools import seed, tenants


def test_seed_creates_the_demo_tenant(conn: psycopg.Connection[Any]) -> None:
    tenant, created = seed.seed(conn)
    assert created is True
    assert (tenant.slug, tenant.name, tenant.status) == (
        "demo",
        "Demo Tenant",
        tenants.TenantStatus.ACTIVE,
    )
    assert tenants.get_by_slug(conn, "demo") == tenant


def test_second_seed_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    first, _ = seed.seed(conn)
    second, created = seed.seed(conn)
    assert created is False
    assert second == first  # updated_at included
    assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (1,)


def test_concurrent_seeds_create_exactly_one_tenant(
    conn: psycopg.Connection[Any], connect: Any
) -> None:
    workers = 8
    connections = [connect(autocommit=True) for _ in range(workers)]
    barrier = threading.Barrier(workers)

    def run(connection: psycopg.Connection[Any]) -> tuple[tenants.Tenant, bool]:
        barrier.wait()
        return seed.seed(connection)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(run, connections))
    assert sorted(created for _, created in results) == [False] * (workers - 1) + [True]
    assert len({tenant.id for tenant, _ in results}) == 1
    assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (1,)
