"""dbtools.config: one parsed Target, where it comes from, and that it never shows a password."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from yoyo.connections import parse_uri

from dbtools import config, localdb
from dbtools.config import Target
from dbtools.errors import ConfigurationError
from tests.helpers import PROJECT


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABASE_URL or libpq variables in the environment, and an empty current directory."""
    for name in ("DATABASE_URL", "PGCONNECT_TIMEOUT", "PGSSLMODE", "PGTARGETSESSIONATTRS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- where the target comes from ---------------------------------------------------------------


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("DATABASE_URL=postgresql://from-dotenv/db\n")
    found = config.resolve()
    assert (found.params["host"], found.origin) == (
        "from-dotenv",
        f"DATABASE_URL in {clean_env}/.env",
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")
    found = config.resolve()
    assert (found.params["host"], found.origin) == ("from-env", "DATABASE_URL")


def test_dotenv_is_found_in_a_parent_folder(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("DATABASE_URL=postgresql://parent/db\n")
    (clean_env / "sub").mkdir()
    monkeypatch.chdir(clean_env / "sub")
    assert config.resolve().params["host"] == "parent"


def test_explicit_url_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")
    explicit = config.resolve("postgresql://explicit/db", origin="--database-url")
    assert (explicit.params["host"], explicit.origin) == ("explicit", "--database-url")


@pytest.mark.parametrize("value", ["", "   "])
def test_a_database_url_set_but_empty_is_an_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Not a silent fall-back to the embedded cluster: `DATABASE_URL=$TYPO dbtools migrate`."""
    monkeypatch.setenv("DATABASE_URL", value)
    with pytest.raises(ConfigurationError, match="DATABASE_URL is set but empty"):
        config.resolve()
    with pytest.raises(ConfigurationError, match="--database-url is empty"):
        config.resolve(value, origin="--database-url")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"DATABASE_URL='postgresql://h/db\n", "line 1, cannot be parsed"),
        (b"DATABASE_URL=postgresql://a/db\nDATABASE_URL='postgresql://b/db\n", "line 2, cannot be"),
        (b"X=1\nDATABASE_URL\n", "line 2, has no '=' and no value"),
        (b"DATABASE_URL=\n", "is set but empty"),
        (b"DATABASE_URL=postgresql://h/caf\xe9\n", "is not UTF-8"),
    ],
)
def test_a_dotenv_line_that_cannot_be_used_is_an_error(
    clean_env: Path, content: bytes, complaint: str
) -> None:
    (clean_env / ".env").write_bytes(content)
    with pytest.raises(ConfigurationError, match=complaint):
        config.resolve()


def test_a_target_is_passed_through(clean_env: Path) -> None:
    target = Target.from_url("postgresql://h/db")
    assert config.resolve(target) is target


def test_nothing_configured_starts_the_embedded_cluster_and_says_so(
    clean_env: Path, local_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = localdb.default_cluster()
    notes: list[str] = []
    first = config.resolve(note=notes.append)
    with caplog.at_level(logging.INFO, logger="dbtools"):
        second = config.resolve()  # already running: nothing to say
    assert first == second == cluster.target(config.DEFAULT_DBNAME)
    assert first.origin == "the embedded PostgreSQL"
    assert notes == [f"started the embedded PostgreSQL (socket in {cluster.placement.socket_dir})"]
    assert caplog.messages == []


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@host:5432/db",
        "postgres://u:pw@host/db",
        "postgresql+psycopg://u:pw@host/db",
        "POSTGRESQL+PSYCOPG://u:pw@host/db",
        "postgresql://u@/db?host=/var/run/postgresql",
        "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "host=h dbname=db user=u password='p w'",
        "password=Zq1 host=h dbname=db application_name=https://ci.example/x",
    ],
)
def test_libpq_urls_yoyo_urls_and_conninfo_strings_are_accepted(url: str) -> None:
    assert Target.from_url(url).dbname == "db"


def test_several_hosts_and_a_read_write_intent() -> None:
    target = Target.from_url(
        "postgresql://app@db1.internal:5432,db2.internal:5433/dbtools_system"
        "?target_session_attrs=read-write"
    )
    assert target.hosts == ("db1.internal:5432", "db2.internal:5433")
    assert target.params["target_session_attrs"] == "read-write"
    assert target.describe() == "database 'dbtools_system' on db1.internal:5432, db2.internal:5433"


def test_hosts_come_from_pghost_and_pgport_when_the_url_has_none(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.setenv("PGPORT", "55433")
    assert Target.from_url("postgresql:///db").describe() == "database 'db' on db.internal:55433"
    assert Target.from_url("postgresql://h:5/db").hosts == ("h:5",)


def test_hosts_and_ports_from_the_environment_are_counted_together(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGHOST", "127.0.0.1,127.0.0.2")
    monkeypatch.setenv("PGPORT", "55439,55433")
    both = Target.from_url("dbname=db user=app")
    assert both.hosts == ("127.0.0.1:55439", "127.0.0.2:55433")
    assert Target.from_url("dbname=db port=' 55433 '").dbname == "db"  # libpq trims it too


def test_an_ipv6_host_is_described_in_brackets() -> None:
    assert Target.from_url("postgresql://u@[::1]:5433/db").hosts == ("[::1]:5433",)


def test_with_dbname_keeps_the_server_and_credentials() -> None:
    for url in (
        "postgresql://u:pw@h:5433/old?sslmode=require",
        "postgresql://u@/?host=/run/pg&dbname=old",
        "postgresql:///old?host=/run/pg",
    ):
        original = Target.from_url(url)
        moved = original.with_dbname("new db")
        assert moved.dbname == "new db"
        assert moved.params | {"dbname": "old"} == original.params


def test_connect_timeout_defaults_to_ten_seconds(clean_env: Path) -> None:
    assert Target.from_url("postgresql://h/db").connect_kwargs()["connect_timeout"] == "10"


def test_connect_timeout_from_the_url_or_pgconnect_timeout_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        Target.from_url("postgresql://h/db?connect_timeout=3").connect_kwargs()["connect_timeout"]
        == "3"
    )
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "4")
    assert "connect_timeout" not in Target.from_url("postgresql://h/db").connect_kwargs()


def test_yoyo_url_gives_yoyo_exactly_the_parameters(clean_env: Path) -> None:
    target = Target.from_url(
        "postgresql://us%20er:p%40ss%2Fw%3Frd@/dbtools%20system?host=/run/my%20pg&port=5433"
    )
    parsed = parse_uri(target.yoyo_url)
    assert parsed.scheme == "postgresql+psycopg"
    assert parsed.args == target.connect_kwargs()
    assert parsed.args["password"] == "p@ss/w?rd"


def test_url_round_trips(clean_env: Path) -> None:
    target = Target.from_url("postgresql://us%20er:p%40ss@/db%2Fx?host=/run/pg&port=5433")
    again = Target.from_url(target.url())
    assert again.params == target.params


def test_conninfo_for_programs_has_no_secret(clean_env: Path) -> None:
    target = Target.from_url("postgresql://u:Zq1secret@h/db?sslpassword=Zq2")
    assert "Zq" not in target.conninfo()
    assert "dbname=db" in target.conninfo()
    assert target.secrets() == {"password": "Zq1secret", "sslpassword": "Zq2"}


# --- bad input: a clear error, never a password ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("", "is empty"),
        ("mysql://u:Zq1@host/db", "must start with postgresql://"),
        ("not a url Zq1", "not a valid PostgreSQL URL"),
        ("postgresql://u:Zq1@host:port/db", "invalid port"),
        ("postgresql://u:Zq1@host:70000/db", "invalid port"),
        ("postgresql://u:Zq1@host/db?sslmode=maybe&nonsense=1", "not a valid PostgreSQL URL"),
        ("postgresql://u:Zq1@host", "names no database"),
        ("postgresql://u:Zq1@host/db?connect_timeout=abc", "connect_timeout must be a whole"),
        ("postgresql://u:Zq1@host/db?sslmode=bogus", "sslmode must be one of disable"),
        ("postgresql://u:Zq1@host/db?target_session_attrs=primary-ish", "target_session_attrs"),
        ("postgresql://u:Zq1@/db?host=h1,h2,h3&port=5,6", "gives 2 ports for 3 hosts"),
        ("postgresql://u:Zq1@Zq2@host/db", "'@' or '/'"),
        ("postgresql://u:Zq1/Zq2@host/db", "'@' or '/'"),
        ("postgresql://u:Zq1 Zq2@host/db", "not a valid PostgreSQL URL"),
        ("postgresql://u@host/db?password=Top@Zq1%zz", "not a valid PostgreSQL URL"),
        ("host=h password='Zq1 Zq2 dbname=db", "not a valid PostgreSQL URL"),
        ("postgresql://u@host/db?PASSWORD=Zq1", "not a valid PostgreSQL URL"),
        ("Zq1=Zq2 dbname=db application_name=https://x", "not a valid PostgreSQL URL"),
        ("postgresql://u:Zq1%FF@host/db", "not UTF-8 once decoded"),
        ("postgresql://u:Zq1@" + "a" * 64 + ".example/db", "invalid host name"),
        ("postgresql://u:Zq1@h1,h2/db?hostaddr=127.0.0.1", "different number of host and hostaddr"),
        ("postgresql://u:Zq1@host/db?keepalives_idle=99999999999999999999", "whole number"),
        ("postgresql://u:Zq1@host/db?sslcertmode=bogus", "sslcertmode must be one of"),
        ("postgresql://u:Zq1@host/db?sslnegotiation=bogus", "sslnegotiation must be one of"),
        ("postgresql://u:Zq1@host/db?ssl_min_protocol_version=bogus", "ssl_min_protocol_version"),
        ("dbname=postgresql://app:Zq1@127.0.0.1:1/db", "looks like a connection string"),
        ("dbname='host=h user=app password=Zq1 dbname=db'", "looks like a connection string"),
        ("postgresql:///postgresql%3A%2F%2Fapp%3AZq1%40h%2Fdb", "looks like a connection string"),
        ("postgresql://u:Zq1@host/db?require_auth=bogus", "require_auth must list methods"),
        ("postgresql://u:Zq1@host/db?hostaddr=999.1.1.1", "hostaddr that is not an IP"),
        ("postgresql://u:Zq1@host:\u0665\u0665\u0664\u0663\u0663/db", "invalid port"),
        ("postgresql://u:Zq1@host/db?keepalives_idle=\u0661\u0660", "whole number"),
    ],
)
def test_malformed_url_gives_a_clear_error_without_the_password(
    clean_env: Path, url: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        Target.from_url(url, origin="DATABASE_URL")
    message = str(caught.value)
    assert message.startswith("DATABASE_URL")
    assert "Zq" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("PGSSLMODE", "bogus", "PGSSLMODE: sslmode must be one of"),
        ("PGCONNECT_TIMEOUT", "soon", "PGCONNECT_TIMEOUT: connect_timeout must be a whole"),
        ("PGPORT", "abc", "PGPORT has an invalid port"),
        ("PGPORT", "99999", "PGPORT has an invalid port"),
        ("PGHOST", "a..b", "PGHOST has an invalid host name"),
        ("PGHOSTADDR", "999.1.1.1", "PGHOSTADDR has a hostaddr that is not an IP"),
        ("PGREQUIREAUTH", "bogus", "PGREQUIREAUTH: require_auth"),
    ],
)
def test_bad_libpq_environment_variables_are_configuration_errors(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=complaint):
        Target.from_url("postgresql:///db")


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII", "auto", "win1252"])
def test_a_url_may_not_ask_for_another_encoding_than_utf8(encoding: str) -> None:
    """Tenant names and settings are any Unicode: another client_encoding would fail on the
    first emoji (LATIN1), or hand back bytes for text (SQL_ASCII, and auto under LC_ALL=C)."""
    with pytest.raises(ConfigurationError, match="client_encoding to another encoding than UTF8"):
        Target.from_url(f"postgresql:///db?client_encoding={encoding}")
    for accepted in ("UTF8", "utf8", "UTF-8", "unicode"):
        target = Target.from_url(f"postgresql:///db?client_encoding={accepted}")
        assert target.connect_kwargs()["client_encoding"] == accepted


def test_client_encoding_is_utf8_whatever_pgclientencoding_says(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    assert Target.from_url("postgresql:///db").connect_kwargs()["client_encoding"] == "UTF8"


def test_describe_and_repr_never_show_the_password() -> None:
    target = Target.from_url("postgresql://app:Zq1%40Zq2@h:5433/db?sslpassword=Zq3")
    assert target.describe() == "database 'db' on h:5433"
    assert "Zq" not in repr(target)
    assert "Zq" not in str(target)


def test_only_config_parses_connection_strings() -> None:
    """Nothing below the edge re-parses a URL: only dbtools/config.py may call libpq's or
    urllib's parsers."""
    parsers = {"conninfo_to_dict", "urlsplit", "urlparse", "parse_qs", "parse_qsl", "parse_uri"}
    offenders = []
    for path in sorted((PROJECT / "dbtools").rglob("*.py")):
        if path.name == "config.py":
            continue
        tree = ast.parse(path.read_text())
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        } | {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        offenders += [f"{path.name}: {name}" for name in sorted(names & parsers)]
    assert offenders == []


# --- DBTOOLS_PREPARED_STATEMENTS -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, config.PreparedStatements.AUTO),
        ("", config.PreparedStatements.AUTO),
        ("auto", config.PreparedStatements.AUTO),
        ("on", config.PreparedStatements.ON),
        (" OFF ", config.PreparedStatements.OFF),
    ],
)
def test_the_prepared_statements_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: config.PreparedStatements
) -> None:
    if value is None:
        monkeypatch.delenv(config.PREPARED_STATEMENTS_VAR, raising=False)
    else:
        monkeypatch.setenv(config.PREPARED_STATEMENTS_VAR, value)
    assert config.prepared_statements() is expected


@pytest.mark.parametrize("value", ["yes", "true", "1", "disable"])
def test_a_bad_prepared_statements_setting_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(config.PREPARED_STATEMENTS_VAR, value)
    with pytest.raises(ConfigurationError) as caught:
        config.prepared_statements()
    assert str(caught.value) == (
        "the environment variable DBTOOLS_PREPARED_STATEMENTS must be one of auto, on, off, "
        f"not {value!r}"
    )


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 10.0), ("0", 0.0), (" 2.5 ", 2.5), ("600", 600.0)]
)
def test_the_migration_lock_wait_is_a_number_of_seconds(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    monkeypatch.setenv(config.MIGRATION_LOCK_WAIT_VAR, value)
    assert config.migration_lock_wait() == seconds


@pytest.mark.parametrize("value", ["ten", "-1", "nan", "inf", "86401", "1_0", "0x10", "1e3"])
def test_a_bad_migration_lock_wait_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(config.MIGRATION_LOCK_WAIT_VAR, value)
    with pytest.raises(ConfigurationError, match="DBTOOLS_MIGRATION_LOCK_WAIT must be a number"):
        config.migration_lock_wait()
