"""Where the URL comes from, how it is checked, and that a password is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtools import config
from dbtools.errors import ConfigurationError


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABASE_URL in the environment, and an empty current directory."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("DATABASE_URL=postgresql://from-dotenv/db\n")
    assert config.configured_url() == "postgresql://from-dotenv/db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")
    assert config.configured_url() == "postgresql://from-env/db"


def test_dotenv_is_found_in_a_parent_folder(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("DATABASE_URL=postgresql://parent/db\n")
    (clean_env / "sub").mkdir()
    monkeypatch.chdir(clean_env / "sub")
    assert config.configured_url() == "postgresql://parent/db"


def test_nothing_configured(clean_env: Path) -> None:
    assert config.configured_url() is None


def test_explicit_url_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")
    assert config.resolve_url("postgresql://explicit/db") == "postgresql://explicit/db"
    assert config.resolve_url() == "postgresql://from-env/db"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@host:5432/db",
        "postgres://u:pw@host/db",
        "postgresql+psycopg://u:pw@host/db",
        "postgresql://u@/db?host=/var/run/postgresql",
    ],
)
def test_parse_accepts_libpq_and_yoyo_urls(url: str) -> None:
    assert config.parse_url(url)["dbname"] == "db"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://u:topsecret@host/db", "must start with postgresql://"),
        ("not a url topsecret", "must be a URL"),
        ("postgresql://u:topsecret@host:port/db", "invalid port"),
        ("postgresql://u:topsecret@host/db?sslmode=maybe&nonsense=1", "not a valid PostgreSQL URL"),
        ("postgresql://u:topsecret@host", "names no database"),
    ],
)
def test_malformed_url_gives_a_clear_error_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        config.parse_url(url)
    assert "topsecret" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:s3cr%40t@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=s3cret&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h password='s3 cret' dbname=db", "host=h password=*** dbname=db"),
    ],
)
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert config.mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cr/et@db.example:5432/dbtools_system",
        "postgresql://app:s3cr#et@db.example/dbtools_system",
        "postgresql://app:s3cr?et@db.example/dbtools_system",
        "postgresql://app:s3cr@et@db.example/dbtools_system",
        "postgresql://app@db.example/dbtools_system?pass%77ord=s3cret",
        "postgresql://app@db.example/dbtools_system?PASSWORD=s3cret",
    ],
)
def test_awkward_passwords_are_masked_and_never_echoed(url: str) -> None:
    assert "s3cr" not in config.mask_url(url)
    assert "s3cr" not in error_of(url)


def error_of(url: str) -> str:
    """The message parse_url raises for ``url``, or "" if it parses."""
    try:
        config.parse_url(url)
    except ConfigurationError as exc:
        return str(exc)
    return ""


def test_url_with_dbname_replaces_the_database_wherever_it_was_written() -> None:
    for url in (
        "postgresql://u:pw@h:5433/old?sslmode=require",
        "postgresql://u@/?host=/run/pg&dbname=old",
        "postgresql:///old?host=/run/pg",
    ):
        params = config.parse_url(config.url_with_dbname(url, "new db"))
        assert params["dbname"] == "new db"
        assert params | {"dbname": "old"} == config.parse_url(url)
