"""dbtools for asyncio: the same records, errors, SQL and transaction rules, awaited.

- :mod:`dbtools.aio.db`: ``connect()`` and ``create_pool()`` for ``psycopg.AsyncConnection``,
  checked for a pooler as :mod:`dbtools.db` checks sync connections.
- :mod:`dbtools.aio.tenants`: every function of :mod:`dbtools.tenants`, ``async``.
- :mod:`dbtools.aio.cache`: :class:`~dbtools.cache.TenantCache` for an async pool.

Nothing is defined twice: each query, each validation and the row-to-record mapping live in
:mod:`dbtools.tenants` and :mod:`dbtools.db`, and these modules only await them.
"""
