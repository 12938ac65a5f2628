"""Where the database is: a :class:`Target`, parsed and checked once, at the edge.

A ``Target`` holds validated libpq connection parameters. It is made once per invocation, by
:func:`resolve`, the one policy for where the database comes from:

1. an explicit URL (the ``--database-url`` option, or the argument of ``db.connect()``);
2. ``DATABASE_URL`` in the environment;
3. ``DATABASE_URL`` in a ``.env`` file, found from the current directory upwards;
4. the embedded PostgreSQL cluster of :mod:`dbtools.localdb`, started on demand.

Everything below takes the ``Target``: nothing parses a URL string after this module. A password
is never shown: messages describe a target from its parsed parameters (:meth:`Target.describe`),
and the errors of a URL that cannot be parsed quote nothing of it.

The connection settings that are not libpq's are read here too: :func:`prepared_statements`
(``DBTOOLS_PREPARED_STATEMENTS``) says whether connections may use server-side prepared
statements, which a transaction pooler such as PgBouncer hands to other clients.
"""

from __future__ import annotations

import enum
import functools
import io
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbtools.errors import ConfigurationError

DATABASE_URL_VAR = "DATABASE_URL"
PREPARED_STATEMENTS_VAR = "DBTOOLS_PREPARED_STATEMENTS"
MIGRATION_LOCK_WAIT_VAR = "DBTOOLS_MIGRATION_LOCK_WAIT"
DEFAULT_MIGRATION_LOCK_WAIT = 10.0  # seconds
DEFAULT_DBNAME = "dbtools_system"
# Seconds libpq waits for a server to answer, unless the URL or PGCONNECT_TIMEOUT says otherwise.
CONNECT_TIMEOUT = 10

_logger = logging.getLogger("dbtools")

# yoyo needs the driver in the scheme; libpq knows only postgresql:// and postgres://.
_SCHEMES = ("postgresql", "postgres")
_YOYO_SCHEME = "postgresql+psycopg"
# Parameters with a fixed set of values, which libpq checks only when it connects.
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}
_INTEGERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_INTEGER = re.compile(r"\s*-?\d{1,9}\s*", re.ASCII)  # libpq reads them into a C int
_DIGITS = re.compile(r"\d+", re.ASCII)
_AUTH_METHODS = ("password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_DOTENV_KEY = re.compile(rf"\s*(export\s+)?{DATABASE_URL_VAR}\b")
_ENCODING_HINT = (
    "percent-encode special characters in the user name and password "
    "(space %20, / %2F, ? %3F, # %23, @ %40, : %3A, % %25)"
)


@dataclass(frozen=True, repr=False)
class Target:
    """A database to connect to: validated libpq parameters, and where they came from.

    Make one with :meth:`from_url` or :func:`resolve`; use :meth:`connect_kwargs` for psycopg,
    :meth:`with_dbname` for another database on the same server, :attr:`yoyo_url` for yoyo, and
    :meth:`describe` (never the parameters themselves) in messages.
    """

    parameters: tuple[tuple[str, str], ...]
    origin: str = "the database URL"

    @classmethod
    def from_url(cls, url: str, *, origin: str = "the database URL") -> Target:
        """Parse a ``postgresql://`` (or ``postgres://``, ``postgresql+psycopg://``) URL, or a
        libpq ``key=value`` connection string, and check it.

        Raises :class:`ConfigurationError` with a one-line reason that quotes nothing of a
        password. A URL that libpq would read in a surprising way (an unencoded ``@`` or ``/``
        in the password) is refused rather than guessed at.
        """
        text = url.strip()
        if not text:
            raise ConfigurationError(f"{origin} is empty")
        scheme = _SCHEME.match(text)  # a URL; anything else is a key=value string
        if scheme:
            if scheme[1].lower().removesuffix("+psycopg") not in _SCHEMES:
                raise ConfigurationError(
                    f"{origin} must start with postgresql:// (or postgresql+psycopg://)"
                )
            rest = text[scheme.end() :]
            _check_url_shape(rest, origin)
            text = f"postgresql://{rest}"
        try:
            params = conninfo_to_dict(text)
        except UnicodeDecodeError:  # a percent-escape that decodes to bytes that are not UTF-8
            raise ConfigurationError(
                f"{origin} holds a percent-escape that is not UTF-8 once decoded: {_ENCODING_HINT}"
            ) from None
        except psycopg.ProgrammingError:
            # libpq quotes the text it choked on, which may hold a password: say it our way.
            raise ConfigurationError(
                f"{origin} is not a valid PostgreSQL URL or connection string: check the "
                f"parameter names (lowercase, as libpq spells them) and {_ENCODING_HINT}"
            ) from None
        return cls.from_params(origin=origin, **{k: str(v) for k, v in params.items()})

    @classmethod
    def from_params(cls, *, origin: str = "the database URL", **params: str | int) -> Target:
        """A target from libpq keyword parameters, checked like a parsed URL."""
        values = {key: str(value) for key, value in params.items() if value is not None}
        _check_params(values, origin)
        return cls(tuple(sorted(values.items())), origin)

    @property
    def params(self) -> dict[str, str]:
        """The libpq parameters (a copy)."""
        return dict(self.parameters)

    @property
    def dbname(self) -> str:
        return self.params["dbname"]

    @property
    def user(self) -> str | None:
        return self.params.get("user")

    @property
    def password(self) -> str | None:
        return self.params.get("password")

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every ``host:port`` libpq will try, in order (one for a plain URL)."""
        params, env = self.params, os.environ
        named = params.get("host") or params.get("hostaddr")
        service = params.get("service") or env.get("PGSERVICE")
        if not (named or env.get("PGHOST") or env.get("PGHOSTADDR")) and service:
            return (f"the hosts of service {service!r}",)
        hosts = (named or env.get("PGHOST") or env.get("PGHOSTADDR") or "").split(",")
        ports = (params.get("port") or env.get("PGPORT") or "").split(",")
        if len(ports) == 1:
            ports *= len(hosts)
        return tuple(
            f"{_bracketed(host) or 'the default host'}:{port or '5432'}"
            for host, port in zip(hosts, ports, strict=False)
        )

    def with_dbname(self, dbname: str) -> Target:
        """The same server and credentials, another database."""
        return Target(tuple(sorted((self.params | {"dbname": dbname}).items())), self.origin)

    def connect_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``psycopg.connect``: the parameters, plus a ``connect_timeout``
        of :data:`CONNECT_TIMEOUT` seconds unless the URL or ``PGCONNECT_TIMEOUT`` sets one, and
        ``client_encoding`` UTF8 (the only one a URL may set): names and settings are any
        Unicode, which a ``PGCLIENTENCODING`` such as LATIN1 in the environment could not carry."""
        params = self.params
        if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
            params["connect_timeout"] = str(CONNECT_TIMEOUT)
        params.setdefault("client_encoding", "UTF8")
        return params

    def conninfo(self) -> str:
        """A ``key=value`` connection string without the password or any other secret
        (``sslpassword``...), for the command line of programs such as pg_dump; give them
        :meth:`secrets` another way."""
        params = self.connect_kwargs()
        for key in _libpq_secrets():
            params.pop(key, None)
        return make_conninfo(**params)

    def secrets(self) -> dict[str, str]:
        """The parameters libpq marks as secret (``password``, ``sslpassword``...)."""
        return {k: v for k, v in self.parameters if k in _libpq_secrets()}

    def url(self) -> str:
        """The libpq URL of this target, password included: for programs, never for messages."""
        params = self.params
        user = params.pop("user", "")
        password = params.pop("password", None)
        dbname = params.pop("dbname")
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        query = urlencode(params, quote_via=quote, safe="/")
        return f"postgresql://{userinfo}{'@' if userinfo else ''}/{quote(dbname, safe='')}" + (
            f"?{query}" if query else ""
        )

    @property
    def yoyo_url(self) -> str:
        """The ``postgresql+psycopg://`` URL yoyo needs (every parameter in the query string,
        which yoyo decodes; it does not decode the path). Holds the password."""
        return f"{_YOYO_SCHEME}://?" + urlencode(self.connect_kwargs(), quote_via=quote)

    def describe(self) -> str:
        """Where this target points, for messages: ``database 'x' on host:port``."""
        return f"database {self.dbname!r} on {', '.join(self.hosts)}"

    def __repr__(self) -> str:
        return f"<Target {self.describe()} from {self.origin}>"


def resolve(
    url: str | Target | None = None,
    *,
    origin: str = "the database URL",
    note: Callable[[str], None] | None = None,
) -> Target:
    """The target to use: ``url`` if given, else ``DATABASE_URL`` (environment, then ``.env``),
    else the embedded cluster, which is initialised and started if need be.

    ``note`` is told, in one line, when the embedded cluster had to be started (default: the
    ``dbtools`` logger at INFO level).
    """
    if isinstance(url, Target):
        return url
    if url is not None:  # given, even empty: an empty --database-url is a mistake, not "unset"
        return Target.from_url(url, origin=origin)
    configured = configured_url()
    if configured is not None:
        text, where = configured
        if not text.strip():
            raise ConfigurationError(
                f"{where} is set but empty: unset it to use the embedded PostgreSQL, or give a URL"
            )
        return Target.from_url(text, origin=where)
    from dbtools import localdb  # only needed, and only imported, when nothing is configured

    cluster = localdb.default_cluster()
    if cluster.start():
        (note or _logger.info)(
            f"started the embedded PostgreSQL (socket in {cluster.placement.socket_dir})"
        )
    return cluster.target(DEFAULT_DBNAME)


def configured_url() -> tuple[str, str] | None:
    """``DATABASE_URL`` and where it was found (environment, else a ``.env`` file), or None
    when neither sets it. A ``.env`` line for it that cannot be read is an error, not unset."""
    url = os.environ.get(DATABASE_URL_VAR)
    if url is not None:
        return url, DATABASE_URL_VAR
    from dotenv import dotenv_values, find_dotenv
    from dotenv.parser import parse_stream

    path = find_dotenv(usecwd=True)
    if not path:
        return None
    where = f"{DATABASE_URL_VAR} in {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} is not UTF-8") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    # python-dotenv skips a line it cannot parse, with a warning, and would leave us with an
    # earlier line or none: a line meant for DATABASE_URL that it cannot use is an error.
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error and _DOTENV_KEY.match(binding.original.string):
            raise ConfigurationError(f"{where}, line {line}, cannot be parsed: check its quotes")
        if binding.key == DATABASE_URL_VAR and binding.value is None:
            raise ConfigurationError(f"{where}, line {line}, has no '=' and no value")
    dotenv_logger = logging.getLogger("dotenv.main")
    level, dotenv_logger.level = dotenv_logger.level, logging.ERROR  # said above, in one line
    try:
        url = dotenv_values(path).get(DATABASE_URL_VAR)
    finally:
        dotenv_logger.level = level
    return None if url is None else (url, where)


class PreparedStatements(enum.StrEnum):
    """May connections use server-side prepared statements (``DBTOOLS_PREPARED_STATEMENTS``)?

    AUTO, the default: yes, unless the connection turns out to go through a pooler (see
    :func:`dbtools.db.behind_pooler`). ON: always (a direct connection that detection
    mistakes for a pooler, or PgBouncer 1.21+ with ``max_prepared_statements`` set). OFF: never
    (a pooler that detection cannot see).
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"


def prepared_statements() -> PreparedStatements:
    """The ``DBTOOLS_PREPARED_STATEMENTS`` setting of the environment (unset or empty: auto).

    Read on every connect, so it is honoured by the library, the command and the migrations
    alike; a value other than on, off and auto is a :class:`ConfigurationError`.
    """
    value = os.environ.get(PREPARED_STATEMENTS_VAR, "").strip().lower()
    try:
        return PreparedStatements(value or PreparedStatements.AUTO)
    except ValueError:
        choices = ", ".join(choice.value for choice in PreparedStatements)
        raise ConfigurationError(
            f"the environment variable {PREPARED_STATEMENTS_VAR} must be one of {choices}, "
            f"not {value[:20]!r}"
        ) from None


_DECIMAL_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)


def migration_lock_wait() -> float:
    """Seconds ``migrate`` and ``rollback`` wait for another run's migration lock:
    ``DBTOOLS_MIGRATION_LOCK_WAIT`` (unset or empty: 10), a number from 0 to 86400."""
    text = os.environ.get(MIGRATION_LOCK_WAIT_VAR, "").strip()
    if not text:
        return DEFAULT_MIGRATION_LOCK_WAIT
    value = float(text) if _DECIMAL_NUMBER.fullmatch(text) else -1.0
    if not 0 <= value <= 86400:
        raise ConfigurationError(
            f"the environment variable {MIGRATION_LOCK_WAIT_VAR} must be a number of seconds "
            f"from 0 to 86400, not {text[:20]!r}"
        )
    return value


def _check_url_shape(rest: str, origin: str) -> None:
    """Refuse the URLs libpq reads differently from what was meant: an unencoded ``@`` or
    ``/`` in the password makes libpq take part of the password for the host, the port or
    the database name."""
    authority_and_path = rest.split("?", 1)[0]
    authority, slash, path = authority_and_path.partition("/")
    if authority.count("@") > 1 or (slash and "@" in path):
        raise ConfigurationError(
            f"{origin} has an '@' or '/' where libpq cannot tell the password from the host: "
            f"{_ENCODING_HINT}"
        )


def _check_params(params: Mapping[str, str], origin: str) -> None:
    """Check the values libpq would only reject when connecting; quote none of them."""
    if not params.get("dbname"):
        raise ConfigurationError(
            f"{origin} names no database: add one as the path, "
            "e.g. postgresql://user@host/dbtools_system"
        )
    if "=" in params["dbname"] or "://" in params["dbname"]:  # libpq may expand it, secrets too
        raise ConfigurationError(
            f"{origin} names a database that looks like a connection string (it holds '=' or "
            "'://'): give the name of the database alone"
        )
    encoding = params.get("client_encoding")
    if encoding is not None and encoding.replace("-", "").lower() not in ("utf8", "unicode"):
        raise ConfigurationError(
            f"{origin} sets client_encoding to another encoding than UTF8: tenant names and "
            "settings are any Unicode, so dbtools speaks UTF8; drop the parameter"
        )
    host_lists = []
    for key, value, where in _effective(params, ("host", "hostaddr"), origin):
        hosts = value.split(",")
        if any("@" in host for host in hosts):
            raise ConfigurationError(f"{where} has an '@' in the host name: {_ENCODING_HINT}")
        if not all(_valid_host(host) for host in hosts):
            raise ConfigurationError(
                f"{where} has an invalid host name (each dot-separated label 1 to 63 characters)"
            )
        if key == "hostaddr" and not all(_is_ip(address) for address in hosts if address):
            raise ConfigurationError(f"{where} has a hostaddr that is not an IP address")
        host_lists.append(hosts)
    if len({len(hosts) for hosts in host_lists}) > 1:
        raise ConfigurationError(f"{origin} lists a different number of host and hostaddr values")
    checked = ("port", "require_auth", *_CHOICES, *_INTEGERS)
    for key, value, where in _effective(params, checked, origin):
        if key == "port":
            ports = [p.strip() for p in value.split(",")]
            if not all(p == "" or (_DIGITS.fullmatch(p) and 0 < int(p) < 65536) for p in ports):
                raise ConfigurationError(
                    f"{where} has an invalid port: use a number from 1 to 65535"
                )
            host_count = max((len(hosts) for hosts in host_lists), default=1)
            if len(ports) not in (1, host_count):
                raise ConfigurationError(
                    f"{where} gives {len(ports)} ports for {host_count} host"
                    f"{'s' if host_count != 1 else ''}: give one port, or one for each host"
                )
        elif key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigurationError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}")
        elif key in _INTEGERS and not _INTEGER.fullmatch(value):
            raise ConfigurationError(f"{where}: {key} must be a whole number")
        elif key == "require_auth" and not all(
            method.strip().removeprefix("!") in _AUTH_METHODS for method in value.split(",")
        ):
            raise ConfigurationError(
                f"{where}: require_auth must list methods among {', '.join(_AUTH_METHODS)}"
            )


def _valid_host(host: str) -> bool:
    """A unix socket folder, an IP address, or a name the resolver will take."""
    if not host or host.startswith("/") or _is_ip(host):
        return True
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _effective(
    params: Mapping[str, str], keys: tuple[str, ...], origin: str
) -> Iterator[tuple[str, str, str]]:
    """Each of ``keys`` with the value libpq will use: from the URL, else its ``PG*`` variable."""
    envvars = _libpq_envvars()
    for key in keys:
        if key in params:
            yield key, params[key], origin
        elif envvars.get(key) and os.environ.get(envvars[key]):
            yield key, os.environ[envvars[key]], f"the environment variable {envvars[key]}"


@functools.cache
def _libpq_secrets() -> frozenset[str]:
    """The keywords libpq itself hides when it shows parameters (``dispchar`` ``*``)."""
    return frozenset(
        option.keyword.decode() for option in pq.Conninfo.get_defaults() if option.dispchar == b"*"
    )


@functools.cache
def _libpq_envvars() -> dict[str, str]:
    """libpq's keywords and the environment variables it reads them from."""
    return {
        option.keyword.decode(): option.envvar.decode() if option.envvar else ""
        for option in pq.Conninfo.get_defaults()
    }


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, so that the port after it reads as a port."""
    return f"[{host}]" if ":" in host and not host.startswith("/") else host
