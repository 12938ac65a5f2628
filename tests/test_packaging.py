"""The wheel, as other services install it: built from this checkout, installed into a fresh
virtualenv outside it, and run from an empty folder against a real server. Then the README's
downstream ``conftest.py``, run by pytest as another project would run it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from dbtools import db
from dbtools.config import Target
from tests.helpers import MIGRATION_IDS, PROJECT, SERVER

# One worker builds and installs the wheel once for the whole module (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("packaging")


@dataclass(frozen=True)
class Installed:
    """A virtualenv with the wheel installed, and the wheel itself."""

    venv: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(
        self, *args: str | Path, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=clean_env() | (env or {}),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def clean_env() -> dict[str, str]:
    """The environment without anything that would point at this checkout or its database."""
    dropped = ("DATABASE_URL", "DBTOOLS_", "PYTHON", "VIRTUAL_ENV", "PG")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


def build_wheel(out: Path) -> Path:
    """Build the wheel from a copy of the sources (the build writes beside them)."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PROJECT / "sql", source / "sql", ignore=ignore)
    shutil.copytree(PROJECT / "dbtools", source / "dbtools", symlinks=True, ignore=ignore)
    build = "from setuptools import build_meta; import sys; build_meta.build_wheel(sys.argv[1])"
    (out / "dist").mkdir()
    subprocess.run(  # the PEP 517 hook itself: no frontend, nothing downloaded
        [sys.executable, "-c", build, str(out / "dist")],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (out / "dist").glob("dbtools-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in a fresh virtualenv (installed by uv, one of the development tools). Its
    dependencies come from this suite's environment (a .pth file), so nothing is downloaded;
    dbtools itself only from the wheel."""
    root = tmp_path_factory.mktemp("packaging")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [
            *(str(uv), "pip", "install", "--quiet", "--offline", "--no-deps"),
            *("--python", str(venv / "bin" / "python"), str(wheel)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return Installed(venv, wheel)


def test_the_wheel_carries_the_migrations_the_hook_and_the_schema(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for migration_id in MIGRATION_IDS:
        assert f"dbtools/sql/{migration_id}.sql" in names
        assert f"dbtools/sql/{migration_id}.rollback.sql" in names
    assert {
        "dbtools/sql/post-apply.py",
        "dbtools/sql/schema/schema.sql",
        "dbtools/sql/roles/runtime.sql",
    } <= names
    modules = {
        path.relative_to(PROJECT).as_posix()
        for path in (PROJECT / "dbtools").rglob("*.py")
        if "sql" not in path.relative_to(PROJECT / "dbtools").parts
    }
    assert {"dbtools/aio/tenants.py", "dbtools/cache.py", "dbtools/cli/__init__.py"} <= modules
    assert modules | {"dbtools/py.typed"} <= names  # every module: a new package must be listed


def test_every_command_works_from_the_wheel_in_an_empty_folder(
    installed: Installed, missing_db: Target, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    where = installed.run(
        installed.python,
        "-c",
        "from dbtools import migrations, schema; "
        "print(migrations.MIGRATIONS_DIR, schema.SCHEMA_FILE)",
        cwd=empty,
    )
    for path in where.stdout.split():
        assert Path(path).is_relative_to(installed.venv), where

    dbtools = installed.venv / "bin" / "dbtools"
    env = {"DATABASE_URL": missing_db.url()}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return installed.run(dbtools, *args, cwd=empty, env=env)

    role = f"dbtools_wheel_{os.getpid()}"  # roles are the server's: dropped below
    migrate = run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout.splitlines() == [
        f"created database {missing_db.dbname!r}",
        *(f"applied {migration_id}" for migration_id in MIGRATION_IDS),
    ]
    for args, code in [
        (["status"], 0),
        (["schema", "check"], 0),
        (["rollback"], 0),
        (["status"], 3),
        (["migrate", "--dry-run"], 0),
        (["migrate"], 0),
        (["seed"], 0),
        (["demo"], 0),
        (["tenants", "show", "demo"], 0),
        (["roles", "setup", "--role", role], 0),
    ]:
        result = run(*args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
    assert list(empty.iterdir()) == []  # nothing written where it ran
    with db.connect(missing_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (PROJECT / "README.md").read_text(), re.S)


def test_the_readme_downstream_conftest_runs_against_the_installed_package(
    installed: Installed, tmp_path: Path
) -> None:
    """A downstream project: the README's conftest.py (the variant for a running server) and
    test, run by pytest with the wheel installed, outside this suite's fixtures."""
    [conftest] = [block for block in readme_blocks() if "postgresql_noproc(" in block]
    [test] = [block for block in readme_blocks() if "def test_a_tenant_is_found" in block]
    project = tmp_path / "downstream"
    project.mkdir()
    (project / "conftest.py").write_text(conftest)
    (project / "test_tenants.py").write_text(test)
    (project / "test_installed.py").write_text(
        "import dbtools\n\n\n"
        "def test_dbtools_comes_from_the_wheel():\n"
        f"    assert dbtools.__file__.startswith({str(installed.venv)!r})\n"
    )
    server = SERVER.params
    options = [
        f"--postgresql-host={server['host']}",
        f"--postgresql-port={server.get('port', '5432')}",
        f"--postgresql-dbname=downstream_{os.getpid()}",
    ]
    options += [f"--postgresql-user={server['user']}"] if "user" in server else []
    options += [f"--postgresql-password={server['password']}"] if "password" in server else []
    result = installed.run(
        installed.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *options, cwd=project
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_installed_package_needs_a_database_url(installed: Installed, tmp_path: Path) -> None:
    """A deploy job that forgot DATABASE_URL fails; it does not migrate a throw-away embedded
    cluster in its working folder. Nor does schema dump rewrite the installed package."""
    empty = tmp_path / "empty"
    empty.mkdir()
    dbtools = installed.venv / "bin" / "dbtools"
    for command in (["migrate"], ["status"], ["demo"], ["db", "start"]):
        result = installed.run(dbtools, *command, cwd=empty)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith("dbtools: error: no database configured: set DATABASE_URL")
    result = installed.run(dbtools, "schema", "dump", cwd=empty, env={"DATABASE_URL": "x"})
    assert result.returncode == 2
    assert "give the file to write with --file" in result.stderr
    assert list(empty.iterdir()) == []
