"""For other projects' test suites: load the dbtools schema into pytest-postgresql's template.

pytest-postgresql builds a template database once per session, runs its loaders on it, and gives
every test a fresh clone. In a downstream ``conftest.py``::

    from pytest_postgresql import factories

    postgresql_proc = factories.postgresql_proc(load=["dbtools.testing:load_schema"])
    postgresql = factories.postgresql("postgresql_proc")

Each test's ``postgresql`` connection then reaches a database migrated exactly as production is:
the migrations shipped in this package, applied by yoyo, with its bookkeeping tables.
"""

from __future__ import annotations

from dbtools import migrations
from dbtools.config import Target

__all__ = ["load_schema"]


def load_schema(
    *,
    host: str | None,
    port: int | str | None,
    user: str | None,
    dbname: str,
    password: str | None = None,
    **_: object,
) -> None:
    """Apply every dbtools migration to ``dbname``: a pytest-postgresql loader.

    pytest-postgresql calls loaders with these keyword arguments (and may add others, which are
    ignored). Raises a :class:`~dbtools.errors.DbToolsError` naming the database, never the
    password, when the database cannot be migrated.
    """
    given = {"host": host, "port": port, "user": user, "dbname": dbname, "password": password}
    parameters = {key: value for key, value in given.items() if value not in (None, "")}
    target = Target.from_params(origin="pytest-postgresql", **parameters)
    migrations.apply(target)
