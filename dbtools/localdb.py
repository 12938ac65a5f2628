"""The embedded PostgreSQL cluster: what every command uses when no ``DATABASE_URL`` is configured.

Three parts: :func:`place` decides where a cluster lives (a :class:`Placement`, paths only),
:func:`find_binaries` finds the server programs, and :class:`Cluster` initialises, starts and
stops the cluster at a placement with those programs (found once per cluster).

The cluster lives in the git-ignored ``.dbtools/`` folder of the project, is created with the
PostgreSQL server binaries already on the machine, and listens only on a unix socket in its own
folder (no TCP port, so it never collides with another server). Authentication is ``trust`` and the
socket is ``0700``: only the OS user that runs the server (and root) can connect.

PostgreSQL refuses to run as root. When dbtools runs as root, the server runs as an unprivileged
OS user (``postgres``, or ``DBTOOLS_PG_OS_USER``); if that user cannot reach the project folder,
or the socket path would pass the 107-byte limit, the cluster moves to ``/tmp/dbtools-<hash>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbtools.config import Target
from dbtools.errors import ConfigurationError, LocalDatabaseError

PORT = 5432  # only names the socket file: the server listens on no TCP port
SUPERUSER = "postgres"
BINDIR_VAR = "DBTOOLS_PG_BINDIR"
OS_USER_VAR = "DBTOOLS_PG_OS_USER"
LOCAL_DIR_VAR = "DBTOOLS_LOCAL_DIR"
# The folder in the temporary directory a cluster moves to when its own cannot serve.
_MOVED = re.compile(r"dbtools-[0-9a-f]{12}")
# Where distributions put the server binaries, newest version first after sorting.
SERVER_BIN_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
)
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_SOCKET_NAME = f".s.PGSQL.{PORT}"
_SETTINGS_MARK = "# Written by dbtools: the embedded cluster listens only on its own unix socket."
_UNSAFE_IN_PATHS = frozenset("\"'$`\\,\n")
_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: install them "
    "(Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; "
    f"macOS: brew install postgresql), set {BINDIR_VAR} to their folder, "
    "or set DATABASE_URL to use a server you already have"
)


@dataclass(frozen=True)
class Placement:
    """Where one embedded cluster lives: ``root/data`` (the data directory), ``root/run`` (its
    socket) and ``root/server.log``. Only paths: nothing here touches the disk."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def lock_file(self) -> Path:
        return self.root.parent / f".{self.root.name}.lock"

    def target(self, dbname: str) -> Target:
        """Database ``dbname`` of the cluster placed here, reached through its socket."""
        return Target.from_params(
            origin="the embedded PostgreSQL",
            host=str(self.socket_dir),
            port=PORT,
            user=SUPERUSER,
            dbname=dbname,
        )


@dataclass(frozen=True)
class Binaries:
    """The folder of the PostgreSQL server programs (``initdb``, ``pg_ctl``, ``postgres``)."""

    bindir: Path

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


class Cluster:
    """Initialising, starting and stopping the embedded cluster at a :class:`Placement`."""

    def __init__(self, placement: Placement, *, durable: bool = True) -> None:
        self.placement = placement
        self.durable = durable  # False for throw-away clusters (tests): no fsync

    def __repr__(self) -> str:
        return f"<Cluster in {self.placement.root}>"

    @functools.cached_property
    def binaries(self) -> Binaries:
        """The server programs, looked for once per cluster."""
        return find_binaries()

    def target(self, dbname: str) -> Target:
        """Database ``dbname`` in this cluster."""
        return self.placement.target(dbname)

    def is_initialised(self) -> bool:
        return (self.placement.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        """Whether the cluster's server is up (asked with ``pg_ctl status``)."""
        if not self.is_initialised():
            return False
        result = self._pg_ctl("status")
        return result.returncode == 0

    def server_version(self) -> str:
        return (self.placement.data_dir / "PG_VERSION").read_text().strip()

    def start(self) -> bool:
        """Start the cluster, initialising it first if needed; False if it was already running.

        With no server binaries it fails before creating anything."""
        self.binaries  # noqa: B018 - fail early, and clearly, when there are no binaries
        with self._lock():
            if not self.is_initialised():
                self._initdb()
            elif _SETTINGS_MARK not in (self.placement.data_dir / "postgresql.conf").read_text():
                raise LocalDatabaseError(
                    f"{self.placement.data_dir} was left half-initialised by an older dbtools "
                    "(it lacks the socket-only settings): delete it and start again"
                )
            if self.is_running():
                return False
            place = self.placement
            result = self._pg_ctl("start", "-l", str(place.log_file), "-w", "-t", "60", "-s")
            if result.returncode != 0:
                raise LocalDatabaseError(
                    f"could not start the embedded PostgreSQL in {place.data_dir}: "
                    f"{_last_line(self._log_tail() or result.stderr)} (log: {place.log_file})"
                )
            return True

    def stop(self) -> bool:
        """Stop the server (fast shutdown); False if it was not running."""
        if not self.placement.root.exists():
            return False  # no cluster: nothing to lock, and no folder to leave behind
        with self._lock():
            if not self.is_running():
                return False
            result = self._pg_ctl("stop", "-m", "fast", "-w", "-s")
            if result.returncode != 0:
                raise LocalDatabaseError(
                    f"could not stop the embedded PostgreSQL in {self.placement.data_dir}: "
                    f"{_last_line(result.stderr)}"
                )
            return True

    def delete(self) -> bool:
        """Stop the server and delete the cluster's folder, and the ``/tmp/dbtools-<hash>``
        folder it was moved to, if it was; False if there was nothing to delete."""
        root = self.placement.root
        moved = _MOVED.fullmatch(root.parent.name) and root.parent.parent == Path(
            tempfile.gettempdir()
        )
        folder = root.parent if moved else root
        if not root.exists():
            return False
        self.stop()
        shutil.rmtree(folder, ignore_errors=True)
        self.placement.lock_file.unlink(missing_ok=True)
        return True

    def _pg_ctl(self, action: str, *options: str) -> subprocess.CompletedProcess[str]:
        command = [self.binaries.tool("pg_ctl"), action, "-D", str(self.placement.data_dir)]
        return run_server_tool([*command, *options], self.placement.root)

    def _initdb(self) -> None:
        place = self.placement
        try:
            _prepare_dir(place.root)
            _prepare_dir(place.socket_dir, mode=0o700)
        except OSError as exc:
            raise LocalDatabaseError(
                f"cannot create {place.root}: {exc.strerror or exc}; "
                f"set {LOCAL_DIR_VAR} to a folder you can write"
            ) from exc
        # initdb works in a staging folder that becomes the data folder, settings included, in
        # one rename: an interrupted first start leaves no cluster with initdb's defaults (a
        # TCP listener with trust authentication), only a staging folder the next start clears.
        staging = place.root / "data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        result = run_server_tool(
            [
                self.binaries.tool("initdb"),
                "--pgdata",
                str(staging),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                *([] if self.durable else ["--no-sync"]),
            ],
            place.root,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise LocalDatabaseError(
                f"initdb failed for the embedded PostgreSQL in {place.data_dir}: "
                f"{_last_line(result.stderr or result.stdout)}"
            )
        settings = [
            _SETTINGS_MARK,
            "listen_addresses = ''",
            f"port = {PORT}",
            f"unix_socket_directories = '{_conf_quote(place.socket_dir)}'",
            "unix_socket_permissions = 0700",
        ]
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write("\n" + "\n".join(settings) + "\n")
        staging.rename(place.data_dir)

    def _log_tail(self) -> str:
        try:
            return self.placement.log_file.read_text(errors="replace")
        except OSError:
            return ""

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise init/start/stop between processes (two ``make`` runs at once, say)."""
        try:
            _make_dirs(self.placement.root.parent)
            handle = self.placement.lock_file.open("a")
        except OSError as exc:
            raise LocalDatabaseError(
                f"cannot create the embedded PostgreSQL's folder {self.placement.root.parent}: "
                f"{exc.strerror or exc}; set {LOCAL_DIR_VAR} to a folder you can write"
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def source_checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), or None when it runs
    installed from a wheel."""
    checkout = Path(__file__).resolve().parent.parent
    is_checkout = (checkout / "pyproject.toml").is_file() and (checkout / "sql").is_dir()
    return checkout if is_checkout else None


def local_dir() -> Path:
    """Where embedded clusters live: ``DBTOOLS_LOCAL_DIR``, else the checkout's ``.dbtools/``.

    An installed package starts no embedded PostgreSQL unless told where: a deploy job that
    forgot ``DATABASE_URL`` must fail, not migrate a throw-away cluster in its working folder.
    """
    configured = os.environ.get(LOCAL_DIR_VAR)
    if configured:
        return Path(configured)
    checkout = source_checkout()
    if checkout is None:
        raise ConfigurationError(
            "no database configured: set DATABASE_URL (an installed dbtools starts an embedded "
            f"PostgreSQL only when {LOCAL_DIR_VAR} names the folder for it)"
        )
    return checkout / ".dbtools"


def place(name: str, *, base: Path | None = None) -> Placement:
    """Where the cluster called ``name`` lives: in ``base`` (default: ``DBTOOLS_LOCAL_DIR``, else
    the project's ``.dbtools/``), or in ``/tmp/dbtools-<hash>`` when the server's OS user could
    not reach that folder or the socket path would be too long."""
    if base is None:
        base = local_dir()
    root = base.absolute() / name
    if not _usable(root):
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        root = Path(tempfile.gettempdir()) / f"dbtools-{digest}" / name
    return Placement(root)


def cluster(name: str, *, durable: bool = True, base: Path | None = None) -> Cluster:
    """The cluster called ``name`` (see :func:`place` for where it lives)."""
    return Cluster(place(name, base=base), durable=durable)


def default_cluster() -> Cluster:
    """The cluster that serves ``dbtools_system`` when no ``DATABASE_URL`` is configured."""
    return cluster("postgres")


def find_binaries() -> Binaries:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Looked for in ``DBTOOLS_PG_BINDIR``, ``pg_config --bindir``, ``PATH`` and the usual
    ``/usr/lib/postgresql/<version>/bin`` (newest first).
    """
    if os.environ.get(BINDIR_VAR):  # set: it is the answer, or a mistake to say so
        folder = Path(os.environ[BINDIR_VAR])
        if not _has_server_tools(folder):
            raise LocalDatabaseError(
                f"{BINDIR_VAR}={folder} holds no initdb, pg_ctl and postgres: fix or unset it"
            )
        return Binaries(folder)
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for pattern in SERVER_BIN_GLOBS:
        versions = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        candidates += [Path(p) for p in versions]
    for folder in candidates:
        if _has_server_tools(folder):
            return Binaries(folder)
    raise LocalDatabaseError(_INSTALL_HINT)


def _has_server_tools(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged OS user to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(OS_USER_VAR) or "postgres"
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise LocalDatabaseError(
            "PostgreSQL refuses to run as root and there is no unprivileged OS user "
            f"{name!r} to run it as: create one (useradd --system {name}) or set {OS_USER_VAR}"
        ) from None
    if user.pw_uid == 0:
        raise LocalDatabaseError(f"{OS_USER_VAR}={name!r} is root; name an unprivileged user")
    return user


def _usable(root: Path) -> bool:
    """Whether a cluster at ``root`` works: a short enough socket path the server can reach."""
    if len(str(root / "run" / _SOCKET_NAME).encode()) > _SOCKET_PATH_MAX:
        return False
    if any(char in _UNSAFE_IN_PATHS for char in str(root)):
        return False  # pg_ctl pastes paths into a shell command; the socket setting is a list
    user = _server_user()
    if user is None:
        return True
    existing = root
    while not existing.exists():
        existing = existing.parent
    return _can_traverse(existing, user)


def _can_traverse(folder: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may reach ``folder``: search permission on it and on every parent."""
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    for step in (folder, *folder.parents):
        info = step.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents as 0755 whatever the umask, so the server's
    user can pass through them; refuse a /tmp/dbtools-* folder that someone else made."""
    missing = []
    step = folder
    while not step.exists():
        missing.append(step)
        step = step.parent
    for created in reversed(missing):
        created.mkdir(mode=0o755)
        created.chmod(0o755)
    for step in (folder, *folder.parents):
        if step.name.startswith("dbtools-") and step.parent == Path(tempfile.gettempdir()):
            info = step.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                raise LocalDatabaseError(
                    f"refusing to use {step}: it is not a folder of this user's (a symlink, or "
                    "made by someone else); remove it or set DBTOOLS_LOCAL_DIR"
                )


def _prepare_dir(folder: Path, mode: int = 0o755) -> None:
    _make_dirs(folder.parent)
    folder.mkdir(exist_ok=True, mode=mode)
    folder.chmod(mode)
    user = _server_user()
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid, follow_symlinks=False)


def run_server_tool(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL server tool, as the unprivileged server user when we are root.

    The tool gets a process group of its own: when dbtools is interrupted (Ctrl-C, SIGTERM), the
    whole group is killed, so no ``postgres`` child of ``initdb`` goes on writing on its own."""
    user = _server_user()
    workdir = cwd if cwd.exists() else Path(tempfile.gettempdir())
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {
            "env": {
                **os.environ,
                "HOME": user.pw_dir,
                "USER": user.pw_name,
                "LOGNAME": user.pw_name,
            },
            "user": user.pw_uid,
            "group": user.pw_gid,
            "extra_groups": [],
        }
    with subprocess.Popen(
        args,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
        **as_user,
    ) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _conf_quote(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace("'", "''")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
