"""The embedded cluster: start, stop, where it lives, who runs it, and missing binaries."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbtools import db, localdb
from dbtools.errors import LocalDatabaseError
from tests.helpers import FAST_TMP, Cli, remove_cluster


@pytest.fixture
def scratch() -> Iterator[localdb.Cluster]:
    """A throw-away cluster of its own, stopped and deleted afterwards."""
    cluster = localdb.cluster(f"scratch-{uuid.uuid4().hex[:8]}", durable=False, base=FAST_TMP)
    yield cluster
    remove_cluster(cluster)


def server_uid(cluster: localdb.Cluster) -> int:
    pid = (cluster.placement.data_dir / "postmaster.pid").read_text().splitlines()[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_start_stop_restart(scratch: localdb.Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    searches: list[localdb.Binaries] = []
    real = localdb.find_binaries

    def counted() -> localdb.Binaries:
        searches.append(real())
        return searches[-1]

    monkeypatch.setattr(localdb, "find_binaries", counted)
    assert not scratch.is_initialised()
    assert scratch.start() is True
    assert scratch.is_running()
    assert scratch.start() is False
    with db.connect(scratch.target("postgres")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    assert scratch.stop() is True
    assert not scratch.is_running()
    assert scratch.stop() is False
    assert scratch.start() is True  # a stopped cluster starts again
    assert len(searches) == 1, "the server binaries are looked for once per cluster"


def test_the_server_is_private_and_never_runs_as_root(scratch: localdb.Cluster) -> None:
    scratch.start()
    assert server_uid(scratch) != 0
    assert server_uid(scratch) == (os.geteuid() or pwd.getpwnam("postgres").pw_uid)
    socket = scratch.placement.socket_dir / ".s.PGSQL.5432"
    assert socket.is_socket()
    assert socket.stat().st_mode & 0o077 == 0


def test_too_long_a_socket_path_moves_the_cluster_to_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = Path(tempfile.gettempdir()) / ("d" * 120)
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(deep))
    placement = localdb.place("postgres")
    assert not str(placement.root).startswith(str(deep))
    assert len(str(placement.socket_dir / ".s.PGSQL.5432")) <= 107


def test_a_folder_the_server_user_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(private))
    root = localdb.place("postgres").root
    if os.geteuid() == 0:  # the server runs as another user, who cannot enter a 0700 root folder
        assert not root.is_relative_to(private)
    else:  # the server runs as us, and we can
        assert root == private / "postgres"


def test_missing_binaries_say_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(localdb.BINDIR_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(localdb, "SERVER_BIN_GLOBS", ())
    with pytest.raises(LocalDatabaseError, match="apt-get install postgresql"):
        localdb.find_binaries()


def test_a_bindir_setting_without_the_binaries_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not silently ignored in favour of binaries found elsewhere."""
    monkeypatch.setenv(localdb.BINDIR_VAR, str(tmp_path))
    with pytest.raises(LocalDatabaseError, match=f"{localdb.BINDIR_VAR}=.* holds no initdb"):
        localdb.find_binaries()


def test_an_unwritable_local_dir_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, "/proc/dbtools-nope")
    with pytest.raises(LocalDatabaseError, match="cannot create the embedded PostgreSQL's folder"):
        localdb.default_cluster().start()


def test_bindir_setting_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = localdb.find_binaries().bindir
    for tool in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / tool).symlink_to(real / tool)
    monkeypatch.setenv(localdb.BINDIR_VAR, str(tmp_path))
    assert localdb.find_binaries().bindir == tmp_path


@pytest.mark.parametrize("name", ['with"quote', "with$(id)", "with`tick`", "with,comma", "it's"])
def test_paths_a_shell_or_a_list_would_misread_move_to_tmp(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(tmp_path / name))
    root = localdb.place("postgres").root
    assert name not in str(root)
    assert root.parent.name.startswith("dbtools-")


def test_starts_under_a_strict_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = FAST_TMP / f"dbtools-umask-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(base / "new" / "folders"))
    cluster = localdb.cluster("strict", durable=False)
    old = os.umask(0o077)
    try:
        assert cluster.start() is True
        assert cluster.is_running()
    finally:
        os.umask(old)
        remove_cluster(cluster)
        shutil.rmtree(base, ignore_errors=True)


def test_a_tmp_folder_made_by_someone_else_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = Path(tempfile.gettempdir()) / f"deep-{uuid.uuid4().hex[:8]}" / ("d" * 120)
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(deep))
    cluster = localdb.cluster("postgres")  # too long a socket path: moved to /tmp/dbtools-*
    planted = cluster.placement.root.parent
    planted.symlink_to(Path(tempfile.gettempdir()))  # as another local user could
    try:
        with pytest.raises(LocalDatabaseError, match="refusing to use"):
            cluster.start()
    finally:
        planted.unlink()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_an_interrupted_first_start_leaves_no_open_cluster(local_dir: Path, signum: int) -> None:
    """Killed while initdb runs (a CI timeout, a closed terminal), the next start must not serve
    initdb's defaults (a TCP listener with trust authentication): the data folder appears only
    when complete, and no initdb goes on writing in the background."""
    cluster = localdb.default_cluster()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dbtools import cli; sys.exit(cli.main(['db', 'start']))",
        ],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(cluster.placement.root.glob("*/PG_VERSION")):  # initdb is under way
        assert time.monotonic() < deadline, "initdb never started"
        time.sleep(0.01)
    process.send_signal(signum)
    process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert not cluster.is_initialised()
    assert cluster.start() is True
    with db.connect(cluster.target("postgres")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
    assert sorted(p.name for p in cluster.placement.root.iterdir()) == ["data", "run", "server.log"]


def test_a_half_initialised_data_folder_is_refused(local_dir: Path) -> None:
    cluster = localdb.default_cluster()
    data = cluster.placement.data_dir
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "postgresql.conf").write_text("listen_addresses = '*'\n")
    with pytest.raises(LocalDatabaseError, match="half-initialised"):
        cluster.start()


def test_db_delete_removes_a_cluster_that_moved_to_the_temporary_folder(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make clean` runs: the cluster goes even when it lives in /tmp/dbtools-<hash>
    (here because the socket path in the configured folder would be too long)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(deep))
    cluster = localdb.default_cluster()
    moved_to = cluster.placement.root.parent
    assert moved_to.parent == Path(tempfile.gettempdir())
    try:
        assert cli("db", "start").returncode == 0
        refused = cli("db", "delete")
        assert refused.returncode == 2
        assert "add --yes" in refused.stderr
        assert cluster.is_running()

        deleted = cli("db", "delete", "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout == f"deleted the embedded PostgreSQL in {cluster.placement.root}\n"
        assert not moved_to.exists()
        again = cli("db", "delete", "--yes")
        assert again.stdout == "there is no embedded PostgreSQL to delete\n"
    finally:
        remove_cluster(cluster)
