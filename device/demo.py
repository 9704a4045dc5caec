"""``smartbin demo``: the main job end to end on one machine, in one command.

A broker (mosquitto when it is on PATH, else the embedded Python broker; or one already
listening), the daemon on the sample clip with the shipped model, and a watcher printing each
event and counts update as it arrives. At the end a summary: events per decision, the bin's
counts, and whether every event the bin produced was delivered. Exit 0 only when the daemon
ended cleanly and delivered == produced.

The daemon runs in this process exactly as ``smartbin run`` runs it (same ``Daemon`` class),
with a fresh state folder, so that the bin's counts are this run's production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from smartbin.device.broker import EmbeddedBroker, port_is_open
from smartbin.errors import SmartbinError

BROKER_MODES = ("auto", "mosquitto", "embedded", "external")
#: How long the watcher may lag behind the daemon's end (the bin's "offline" comes last).
SETTLE_S = 15.0


class MosquittoProcess:
    """A throw-away anonymous mosquitto on ``host:port`` (config and log in ``workdir``)."""

    def __init__(self, binary: str, host: str, port: int, workdir: Path) -> None:
        self.binary, self.host, self.port, self.workdir = binary, host, port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        conf, log_file = self.workdir / "mosquitto.conf", self.workdir / "mosquitto.log"
        user = pwd.getpwuid(os.geteuid()).pw_name  # started as root it would switch users
        conf.write_text(
            f"user {user}\nlistener {self.port} {self.host}\nallow_anonymous true\n"
            f"persistence false\nset_tcp_nodelay true\nlog_dest file {log_file}\n"
        )
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(0.2)  # a bad config or a busy port ends it at once
        for _ in range(int(timeout / 0.1)):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise SmartbinError(
                    f"mosquitto exited with {self.proc.returncode}: {err.strip()}"
                    f"{log_file.read_text() if log_file.exists() else ''}".strip()
                )
            if port_is_open(self.host, self.port, timeout=0.1):
                return
        self.stop()
        raise SmartbinError(f"mosquitto does not listen on {self.host}:{self.port}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


def start_broker(mode: str, host: str, port: int, workdir: Path, stack: ExitStack) -> str:
    """Make a broker available on ``host:port``; returns what it is (for the user)."""
    if mode not in BROKER_MODES:
        raise SmartbinError(f"--broker: '{mode}' is not one of {', '.join(BROKER_MODES)}")
    listening = port_is_open(host, port)
    if mode == "external" or (mode == "auto" and listening):
        if not listening:
            raise SmartbinError(f"--broker external: nothing listens on {host}:{port}")
        return f"the MQTT broker already listening on {host}:{port}"
    if listening:
        raise SmartbinError(f"cannot start a broker on {host}:{port}: the port is in use")
    mosquitto = shutil.which("mosquitto")
    if mode == "mosquitto" or (mode == "auto" and mosquitto):
        if mosquitto is None:
            raise SmartbinError("--broker mosquitto: mosquitto is not on PATH")
        process = MosquittoProcess(mosquitto, host, port, workdir)
        process.start()
        stack.callback(process.stop)
        return f"mosquitto ({mosquitto}) on {host}:{port}"
    embedded = EmbeddedBroker(host, port)
    embedded.start()
    stack.callback(embedded.stop)
    return f"the embedded Python broker (amqtt; demo only) on {host}:{port}"


def run_demo(
    config_file: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    broker: str = "auto",
    log_level: str = "WARNING",
    out: TextIO | None = None,
) -> int:
    """The demo; returns the exit code (0: clean end and every event delivered)."""
    from smartbin.device.comms.topics import Topics
    from smartbin.device.config import load_config
    from smartbin.device.daemon import Daemon
    from smartbin.device.logsetup import setup_logging
    from smartbin.device.watch import Watcher

    out = out or sys.stdout
    if not config_file.is_file():
        raise SmartbinError(
            f"{config_file}: no such demo config (run from the repository root or pass --config)"
        )
    config = load_config(config_file)
    config.mqtt.host, config.mqtt.port = host, port
    prefix = Topics.for_bin(config.mqtt.topic_prefix, config.bin_id).prefix
    bin_name = prefix.rstrip("/")
    setup_logging(log_level.upper(), False)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="smartbin-demo-") as tmp:
        config.state_dir = Path(tmp) / "state"  # fresh: the counts are this run's production
        what = start_broker(broker, host, port, Path(tmp), stack)
        print(f"broker   {what}", file=out)
        print(f"bin      {config.bin_id}: {config.source.kind} {config.source.uri}", file=out)
        print(f"watching {prefix}event, counts, status\n", file=out, flush=True)
        watcher = Watcher(host, port, prefix=prefix, out=out)
        watcher.start()
        stack.callback(watcher.stop)
        code = Daemon(config).run()
        settled = watcher.wait_for_offline(bin_name, SETTLE_S)
        tally = watcher.tally
        produced = sum(tally.counts.get(bin_name, {}).values())
        watcher.wait_for_events(produced, 0 if settled else SETTLE_S)
        print("\nsummary", file=out)
        for line in watcher.summary():
            print(f"  {line}", file=out)
        delivered = tally.delivered
        ok = code == 0 and settled and delivered == produced
        verdict = "OK" if ok else "NOT OK"
        print(
            f"  produced {produced} (the bin's counts), delivered {delivered}: {verdict}", file=out
        )
        if code != 0:
            print(f"  the daemon exited with code {code}", file=out)
        elif not settled:
            print(f"  the bin's final 'offline' did not arrive within {SETTLE_S:g} s", file=out)
        out.flush()
    return 0 if ok else (code or 1)
