"""Suite-wide guards: nothing leaves loopback, tracing is off, no user state is touched."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

# Set before any SDK import: the agents SDK reads this once, lazily.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ.setdefault("SHEPHERD_TIME_SCALE", "1")
for _var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY",
             "OPENAI_BASE_URL", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "SHEPHERD_DB"):
    os.environ.pop(_var, None)
# A developer's own OpenTelemetry settings must not turn every run in the suite into a live
# exporter (tracing off in tests); the OTel tests set their loopback endpoint themselves.
for _var in [v for v in os.environ if v.startswith("OTEL_")]:
    os.environ.pop(_var, None)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise ConnectionRefusedError(f"test tried to reach beyond loopback: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise ConnectionRefusedError(f"test tried to reach beyond loopback: {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own XDG data dir, so the default database is never the user's."""
    data = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_STATE_HOME", str(data / "state"))
    # and its own config dir: a developer's ~/.config/shepherd/config.toml (a notify_command)
    # must not run during the suite
    monkeypatch.setenv("XDG_CONFIG_HOME", str(data / "config"))


# --- parallel runs (pytest-xdist) -----------------------------------------------------------

SUITE_WORKERS = 2  # measured on 2 cores: most of the suite waits on subprocesses, not the CPU


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers ``-n auto`` (pyproject's addopts) means: two for the suite, a folder
    or a ``-k`` over them; none (in-process, as before xdist) for a run of one file or of
    tests in it, where starting workers would cost more than it saves, and for
    ``--snapshot-update`` (syrupy prunes and writes snapshots only when serial).
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides; ``-n N`` on the command line wins over all."""
    forced = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip()
    if forced.isdigit():
        return int(forced)
    if config.getoption("--snapshot-update", default=False):
        return 0
    files = {arg.split("::")[0] for arg in config.args}
    if len(files) == 1 and (config.invocation_params.dir / next(iter(files))).is_file():
        return 0
    return SUITE_WORKERS


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Each process (a worker, or the one serial run) stops its PostgreSQL cluster as its
    session ends, not only at interpreter exit: nothing is left running after a run."""
    from tests.pg_server import stop_shared_server

    stop_shared_server()
