"""Soak test of the whole bin: hours of sorting with the broker going away now and then.

Runs the real daemon (``smartbin run`` in a subprocess) on a looping clip replayed at a
camera's frame rate, with its own mosquitto (persistence on) and a subscriber with a
persistent QoS 1 session, restarts the broker every ``--restart-every`` seconds (down for
``--down-s``), samples the daemon's memory and CPU time from /proc, then stops the daemon
(SIGTERM) and checks delivery:

* events produced (``sort_event`` log lines of the daemon) vs received by the subscriber;
* missing (produced, never received), invented (received, never produced), duplicates
  (at-least-once repeats, same id);
* peak and final RSS, RSS growth per hour (least-squares slope after the warm-up), CPU use
  (daemon CPU seconds / wall seconds; 100 % = one core).

Not a CI test: it runs for minutes to hours. Linux only (/proc), needs ``mosquitto``.

    python -m smartbin.benchmarks.soak --minutes 10 [--fps 30] [--restart-every 60] \\
        [--down-s 5] [--bundle default] [--clip firmware_config/sample/demo.mp4] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartbin.device.broker import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO / "firmware_config" / "sample" / "demo.mp4"
BIN_ID = "soak"
EVENT_LOG = re.compile(r"sort_event id=([0-9a-f]{32})")
SAMPLE_EVERY_S = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Mosquitto:
    """One broker process on 127.0.0.1 with persistence in ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise SystemExit("soak: mosquitto not found (apt install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        user = f"user {_user()}"  # no privilege drop when run as root
        self.conf.write_text(
            f"{user}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"soak: mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class EventCollector:
    """A persistent-session QoS 1 subscriber: sees every event, even across broker restarts."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.ids: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id="soak-collector",
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"smartbin/{BIN_ID}/event", 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            event_id = json.loads(message.payload)["id"]
        except (ValueError, KeyError, TypeError):
            event_id = f"<unreadable {message.payload[:40]!r}>"
        with self._lock:
            self.ids.append(event_id)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Samples:
    """(seconds since start, RSS MiB, CPU seconds) of the daemon process."""

    rows: list[tuple[float, float, float]] = field(default_factory=list)

    def take(self, pid: int, t: float) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        rss_kib = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            0,
        )
        fields_after_comm = stat.rsplit(")", 1)[1].split()
        cpu_s = (int(fields_after_comm[11]) + int(fields_after_comm[12])) / CLK_TCK
        self.rows.append((t, rss_kib / 1024.0, cpu_s))

    def growth_mib_per_hour(self, warmup_s: float) -> float | None:
        """Least-squares slope of RSS over time after the warm-up, in MiB per hour."""
        rows = [(t, rss) for t, rss, _ in self.rows if t >= warmup_s]
        if len(rows) < 3:
            return None
        n = len(rows)
        mean_t = sum(t for t, _ in rows) / n
        mean_r = sum(r for _, r in rows) / n
        var = sum((t - mean_t) ** 2 for t, _ in rows)
        if var == 0:
            return None
        slope = sum((t - mean_t) * (r - mean_r) for t, r in rows) / var
        return slope * 3600.0


def write_config(folder: Path, port: int, args: argparse.Namespace) -> Path:
    model = args.bundle if args.bundle == "default" else str(Path(args.bundle).resolve())
    text = f"""\
bin_id = "{BIN_ID}"
model = "{model}"
state_dir = "{folder / "state"}"
stop_timeout_s = 30
[source]
kind = "opencv"
uri = "{Path(args.clip).resolve()}"
loop = true
realtime = true
fps = {float(args.fps)}
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min_delay_s = 1
reconnect_max_delay_s = 2
[health]
interval_s = 10
"""
    path = folder / "soak.toml"
    path.write_text(text)
    return path


def run_soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    broker = Mosquitto(folder)
    broker.start()
    collector = EventCollector(broker.port)
    config = write_config(folder, broker.port, args)
    log_path = folder / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    samples = Samples()
    restarts = 0
    with open(log_path, "w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "smartbin", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env | {"PYTHONUNBUFFERED": "1"},
        )
        start = time.monotonic()
        end = start + args.minutes * 60.0
        next_restart = start + args.restart_every if args.restart_every > 0 else float("inf")
        try:
            while time.monotonic() < end and daemon.poll() is None:
                now = time.monotonic()
                samples.take(daemon.pid, now - start)
                if now >= next_restart:
                    broker.stop()
                    time.sleep(args.down_s)
                    broker.start()
                    restarts += 1
                    next_restart = time.monotonic() + args.restart_every
                time.sleep(min(SAMPLE_EVERY_S, max(0.0, end - time.monotonic())))
            samples.take(daemon.pid, time.monotonic() - start)
            wall_s = time.monotonic() - start
            crashed = daemon.poll()
            # The last restart may have just happened: let the bin catch up before stopping
            # it, so the figures are about delivery, not about where the clock stopped.
            _wait_delivered(log_path, collector, timeout=60.0)
            daemon.send_signal(signal.SIGTERM)
            exit_code = daemon.wait(120)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    produced = _wait_delivered(log_path, collector, timeout=60.0)
    received = collector.snapshot()
    collector.close()
    broker.stop()
    counts = Counter(received)
    rss = [r for _, r, _ in samples.rows]
    cpu_s = samples.rows[-1][2] if samples.rows else 0.0
    return {
        "minutes": round(wall_s / 60.0, 2),
        "fps": args.fps,
        "broker_restarts": restarts,
        "daemon_died_early": crashed is not None,
        "daemon_exit_code": exit_code,
        "events_produced": len(produced),
        "events_received_unique": len(counts),
        "duplicates": sum(n - 1 for n in counts.values()),
        "missing": len(set(produced) - set(counts)),
        "invented": len(set(counts) - set(produced)),
        "in_order": [i for i in dict.fromkeys(received) if i in set(produced)] == produced,
        "rss_peak_mib": round(max(rss), 1) if rss else None,
        "rss_final_mib": round(rss[-1], 1) if rss else None,
        "rss_growth_mib_per_hour": _round(samples.growth_mib_per_hour(args.warmup_s)),
        "cpu_percent_of_one_core": round(100.0 * cpu_s / wall_s, 1) if wall_s else None,
        "log": str(log_path),
    }


def _wait_delivered(log_path: Path, collector: EventCollector, timeout: float) -> list[str]:
    """The ids produced so far, once all of them were received (or ``timeout`` ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        produced = EVENT_LOG.findall(log_path.read_text(errors="replace"))
        if set(produced) <= set(collector.snapshot()) or time.monotonic() > deadline:
            return produced
        time.sleep(0.5)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{key:26s} {value}" for key, value in result.items()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m smartbin.benchmarks.soak",
        description="Run the bin daemon for a while with broker restarts; report delivery, "
        "memory and CPU.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--fps", type=float, default=30.0, help="replay rate (default 30)")
    parser.add_argument(
        "--restart-every", type=float, default=60.0, help="seconds between broker restarts"
    )
    parser.add_argument("--down-s", type=float, default=5.0, help="broker downtime per restart")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="ignored for RSS growth")
    parser.add_argument("--bundle", default="default", help="model bundle (default: shipped)")
    parser.add_argument("--clip", default=str(DEFAULT_CLIP), help="the looping clip")
    parser.add_argument("--workdir", default=None, help="keep files here (default: temp dir)")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.fps <= 0 or args.down_s < 0 or args.restart_every < 0:
        parser.error("--minutes and --fps must be > 0, --down-s and --restart-every >= 0")
    if not Path(args.clip).is_file():
        parser.error(f"--clip: no such file: {args.clip}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        folder = Path(args.workdir)
        folder.mkdir(parents=True, exist_ok=True)
        result = run_soak(args, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="smartbin-soak-") as tmp:
            result = run_soak(args, Path(tmp))
            result["log"] = "(deleted with the temp dir; use --workdir to keep it)"
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["missing"] == 0 and result["invented"] == 0 and result["in_order"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
