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
from urllib.parse import quote, unquote, urlencode

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
    has_password = _password_in(url) is not None
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the text it choked on, which may be a piece of the password: then say less.
        reason = (
            "check the host, the port and the percent-encoding of the password "
            "(/ ? # @ : and % in it must be written %2F %3F %23 %40 %3A %25)"
            if has_password
            else str(exc).strip().splitlines()[0]
        )
        raise ConfigurationError(
            f"{DATABASE_URL_VAR} is not a valid PostgreSQL URL ({mask_url(url)}): {reason}"
        ) from None
    ports = str(params.get("port") or "")
    if ports and not all(port.isdigit() for port in ports.split(",")):
        shown = "" if has_password else f" {ports!r}"
        raise ConfigurationError(
            f"{DATABASE_URL_VAR} has an invalid port{shown} ({mask_url(url)}): use a number"
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
    """``url`` (or a ``key=value`` conninfo string) with any password replaced by ``***``.

    Errs on the side of hiding: everything between ``user:`` and the last ``@`` is masked, even
    where a password with an unencoded ``/``, ``?`` or ``#`` would confuse a URL parser.
    """
    if "://" not in url:
        return _keyword_password.sub(rf"\g<1>{_MASK}", url)
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")
    if at != -1:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{_MASK}{rest[at:]}"
    head, question, query = rest.partition("?")
    if question:
        query = "&".join(_masked_param(param) for param in query.split("&"))
    return f"{scheme}://{head}{question}{query}"


def describe(params: dict[str, Any]) -> str:
    """A short, password-free description of where ``params`` point, for messages."""
    host = params.get("host") or params.get("hostaddr") or "the default host"
    where = f"{host}:{params['port']}" if params.get("port") else host
    return f"database {params.get('dbname', '?')!r} on {where}"


def _password_in(url: str) -> str | None:
    """The password written in ``url``'s user part (as mask_url finds it), if any."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    password = rest[:at].partition(":")[2] if at != -1 else ""
    query = rest.partition("?")[2]
    for param in query.split("&"):
        key, _, value = param.partition("=")
        if unquote(key).strip().lower() == "password":
            password = password or value
    return password or None


def _masked_param(param: str) -> str:
    key, equals, _ = param.partition("=")
    return f"{key}={_MASK}" if equals and unquote(key).strip().lower() == "password" else param


def url_with_dbname(url: str, dbname: str) -> str:
    """``url`` pointed at another database on the same server, with the same credentials.

    Rebuilt from the parsed parameters (all as query parameters), so a ``dbname`` in the query
    string, or a URL without a host part, cannot leave the original database in place.
    """
    params = parse_url(url) | {"dbname": dbname}
    query = urlencode({key: str(value) for key, value in params.items()}, quote_via=quote)
    return f"postgresql://?{query}"
