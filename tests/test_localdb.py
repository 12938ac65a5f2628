"""The embedded cluster: start, stop, where it lives, who runs it, and missing binaries."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtools import config, localdb
from dbtools.errors import LocalDatabaseError
from tests.conftest import remove_cluster


@pytest.fixture
def scratch() -> Iterator[localdb.Cluster]:
    """A throw-away cluster of its own, stopped and deleted afterwards."""
    cluster = localdb.cluster(f"scratch-{uuid.uuid4().hex[:8]}", durable=False)
    yield cluster
    remove_cluster(cluster)


def server_uid(cluster: localdb.Cluster) -> int:
    pid = (cluster.data_dir / "postmaster.pid").read_text().splitlines()[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_start_status_stop(scratch: localdb.Cluster) -> None:
    assert not scratch.is_initialised()
    assert scratch.start() is True
    assert scratch.is_running()
    assert scratch.start() is False
    with psycopg.connect(**config.parse_url(scratch.url("postgres"))) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    assert scratch.stop() is True
    assert not scratch.is_running()
    assert scratch.stop() is False


def test_ensure_running_restarts_a_stopped_cluster(scratch: localdb.Cluster) -> None:
    scratch.start()
    scratch.stop()
    assert scratch.ensure_running().is_running()


def test_server_never_runs_as_root(scratch: localdb.Cluster) -> None:
    scratch.start()
    assert server_uid(scratch) != 0
    assert server_uid(scratch) == (os.geteuid() or pwd.getpwnam("postgres").pw_uid)


def test_socket_is_private_to_the_server_user(scratch: localdb.Cluster) -> None:
    scratch.start()
    socket = scratch.socket_dir / ".s.PGSQL.5432"
    assert socket.is_socket()
    assert socket.stat().st_mode & 0o077 == 0


def test_too_long_a_socket_path_moves_the_cluster_to_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = Path(tempfile.gettempdir()) / ("d" * 120)
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(deep))
    cluster = localdb.cluster("postgres")
    assert not str(cluster.root).startswith(str(deep))
    assert len(str(cluster.socket_dir / ".s.PGSQL.5432")) <= 107


def test_a_folder_the_server_user_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(private))
    cluster = localdb.cluster("postgres")
    if os.geteuid() == 0:  # the server runs as another user, who cannot enter a 0700 root folder
        assert not cluster.root.is_relative_to(private)
    else:  # the server runs as us, and we can
        assert cluster.root == private / "postgres"


def test_missing_binaries_say_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(localdb.BINDIR_VAR, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(localdb, "SERVER_BIN_GLOBS", ())
    with pytest.raises(LocalDatabaseError, match="apt-get install postgresql"):
        localdb.find_bindir()


def test_bindir_setting_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = localdb.find_bindir()
    monkeypatch.setenv(localdb.BINDIR_VAR, str(real))
    monkeypatch.setattr(localdb, "SERVER_BIN_GLOBS", ())
    assert localdb.find_bindir() == real


@pytest.mark.parametrize("name", ['with"quote', "with$(id)", "with`tick`", "with,comma", "it's"])
def test_paths_a_shell_or_a_list_would_misread_move_to_tmp(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(tmp_path / name))
    cluster = localdb.cluster("postgres")
    assert name not in str(cluster.root)
    assert cluster.root.parent.name.startswith("dbtools-")


def test_starts_under_a_strict_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = Path(tempfile.gettempdir()) / f"dbtools-umask-{uuid.uuid4().hex[:8]}"
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
    planted = cluster.root.parent
    planted.symlink_to(Path(tempfile.gettempdir()))  # as another local user could
    try:
        with pytest.raises(LocalDatabaseError, match="refusing to use"):
            cluster.start()
    finally:
        planted.unlink()
