"""sd_notify against a real AF_UNIX datagram socket (filesystem and abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from smartbin.device.systemd import Notifier


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def _lines(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().splitlines()


def test_ready_status_stopping_to_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _receiver(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.ready("sorting")
        assert _lines(sock) == ["READY=1", "STATUS=sorting"]
        assert notifier.status("12 items")
        assert _lines(sock) == ["STATUS=12 items"]
        assert notifier.stopping()
        assert _lines(sock) == ["STOPPING=1"]
        notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"smartbin-test-{uuid.uuid4().hex}"
    with _receiver(b"\0" + name.encode()) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert _lines(sock) == ["READY=1"]
        notifier.close()


def test_watchdog_pings_at_half_the_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "wd.sock")
    with _receiver(path) as sock:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
        notifier = Notifier(env)
        assert notifier.watchdog_interval_s == pytest.approx(2.0)
        assert notifier.watchdog(now=100.0)
        assert _lines(sock) == ["WATCHDOG=1"]
        assert not notifier.watchdog(now=101.0)  # too early: nothing sent
        assert notifier.watchdog(now=102.1)
        assert _lines(sock) == ["WATCHDOG=1"]
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # exactly two pings, not three
        notifier.close()


def test_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "x.sock"),
        "WATCHDOG_USEC": "4000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    assert not Notifier(env).watchdog_enabled


def test_no_op_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.ready() is False
