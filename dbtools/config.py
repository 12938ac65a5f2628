"""Where the database URL comes from, and how it is checked and shown.

Order of precedence: an explicit URL, then ``DATABASE_URL`` in the environment, then
``DATABASE_URL`` in a ``.env`` file (found from the current directory upwards), then the embedded
PostgreSQL cluster of :mod:`dbtools.localdb`, started on demand. URLs are shown only through
:func:`mask_url`, so a password never reaches a message or a log.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from dotenv import dotenv_values, find_dotenv
from psycopg.conninfo import conninfo_to_dict

from dbtools.errors import ConfigurationError

DATABASE_URL_VAR = "DATABASE_URL"
DEFAULT_DBNAME = "dbtools_system"

# yoyo needs the driver in the scheme (postgresql+psycopg://); libpq knows only these two.
_SCHEMES = ("postgresql", "postgres")
_DRIVER_SUFFIX = "+psycopg"
_MASK = "***"
_query_password = re.compile(r"(?i)((?:^|&)password=)[^&]*")
_keyword_password = re.compile(r"""(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)""")


def configured_url() -> str | None:
    """``DATABASE_URL`` from the environment, else from a ``.env`` file; ``None`` if neither."""
    url = os.environ.get(DATABASE_URL_VAR)
    if url:
        return url
    dotenv_path = find_dotenv(usecwd=True)
    if dotenv_path:
        return dotenv_values(dotenv_path).get(DATABASE_URL_VAR) or None
    return None


def resolve_url(url: str | None = None) -> str:
    """The URL to use: ``url`` if given, else the configured one, else the embedded cluster's.

    The embedded cluster is initialised and started when it is the answer and not yet running.
    """
    if url:
        return url
    url = configured_url()
    if url:
        return url
    from dbtools import localdb  # only needed, and only imported, when nothing is configured

    return localdb.default_cluster().ensure_running().url(DEFAULT_DBNAME)


def parse_url(url: str) -> dict[str, Any]:
    """Check ``url`` and return its libpq connection parameters; it must name a database.

    Accepts ``postgresql://``, ``postgres://`` and yoyo's ``postgresql+psycopg://``. Raises
    :class:`ConfigurationError` with a one-line reason that never includes the password.
    """
    conninfo = libpq_url(url)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        reason = _scrub(str(exc).strip().splitlines()[0], _password_in(url))
        raise ConfigurationError(
            f"{DATABASE_URL_VAR} is not a valid PostgreSQL URL ({mask_url(url)}): {reason}"
        ) from None
    ports = str(params.get("port") or "")
    if ports and not all(port.isdigit() for port in ports.split(",")):
        raise ConfigurationError(
            f"{DATABASE_URL_VAR} has an invalid port {ports!r} ({mask_url(url)}): use a number"
        )
    if not params.get("dbname"):
        raise ConfigurationError(
            f"{DATABASE_URL_VAR} names no database ({mask_url(url)}): "
            "add one as the path, e.g. postgresql://user@host/dbtools_system"
        )
    return {key: str(value) for key, value in params.items() if value is not None}


def libpq_url(url: str) -> str:
    """``url`` in the form libpq reads: ``postgresql+psycopg://`` becomes ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(  # not echoed: it may be a conninfo string with a password
            f"{DATABASE_URL_VAR} must be a URL starting with postgresql://"
        )
    base = scheme.lower().removesuffix(_DRIVER_SUFFIX)
    if base not in _SCHEMES:
        raise ConfigurationError(
            f"{DATABASE_URL_VAR} must start with postgresql:// (or postgresql+psycopg://), "
            f"not {scheme}://"
        )
    return f"{base}://{rest}"


def mask_url(url: str) -> str:
    """``url`` (or a ``key=value`` conninfo string) with any password replaced by ``***``."""
    if "://" not in url:
        return _keyword_password.sub(rf"\g<1>{_MASK}", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hostport}" if colon else netloc
    query = _query_password.sub(rf"\g<1>{_MASK}", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def describe(params: dict[str, Any]) -> str:
    """A short, password-free description of where ``params`` point, for messages."""
    host = params.get("host") or params.get("hostaddr") or "the default host"
    where = f"{host}:{params['port']}" if params.get("port") else host
    return f"database {params.get('dbname', '?')!r} on {where}"


def _password_in(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _scrub(message: str, password: str | None) -> str:
    return message.replace(password, _MASK) if password else message
