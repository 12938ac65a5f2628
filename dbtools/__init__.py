"""dbtools: the system database of the platform, which tracks every tenant, and the tools around it.

Application code uses :mod:`dbtools.tenants` (records in, records out) with a connection from
:mod:`dbtools.db`; operators use the ``dbtools`` command (:mod:`dbtools.cli`).
"""

from __future__ import annotations

__version__ = "0.1.0"
