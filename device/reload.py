"""Swapping the model while the bin runs, and never for a broken one.

Why: a new model is copied onto a bin (or pushed by a fleet tool) while it sorts. The new
bundle is loaded and verified completely (manifest, sha256, interpreter, output tensors)
*beside* the running one; only a bundle that loads replaces it. A broken bundle is refused,
the old model keeps sorting, and the refusal is returned for the daemon to log and report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smartbin.device.bundle import ModelBundle, load_bundle, resolve_bundle_path
from smartbin.device.classifier import Classifier
from smartbin.device.logsetup import fields
from smartbin.errors import SmartbinError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    model_version: str  # the version running after the attempt (the old one when refused)
    previous_version: str
    error: str | None = None

    def to_payload(self) -> dict[str, object]:
        data: dict[str, object] = {
            "ok": self.ok,
            "model_version": self.model_version,
            "previous_version": self.previous_version,
        }
        if self.error:
            data["error"] = self.error
        return data


class ModelManager:
    """Owns the running classifier; ``reload()`` is safe from any thread."""

    def __init__(
        self,
        spec: str | Path,
        num_threads: int | None,
        use_edgetpu: bool,
        install: Callable[[Classifier], None] | None = None,
    ) -> None:
        self.spec = spec
        self.num_threads = num_threads
        self.use_edgetpu = use_edgetpu
        self.install = install  # hands a new classifier to the pipeline
        self._lock = threading.Lock()
        self.classifier: Classifier | None = None

    @property
    def folder(self) -> Path:
        return resolve_bundle_path(self.spec)

    @property
    def model_version(self) -> str:
        return self.classifier.model_version if self.classifier else "none"

    @property
    def bundle(self) -> ModelBundle | None:
        return self.classifier.bundle if self.classifier else None

    def _load(self) -> Classifier:
        bundle = load_bundle(self.spec)
        return Classifier(bundle, num_threads=self.num_threads, use_edgetpu=self.use_edgetpu)

    def load_initial(self) -> Classifier:
        """The first model: a broken bundle here is the user's problem (BundleError, exit 2)."""
        self.classifier = self._load()
        return self.classifier

    def reload(self, reason: str) -> ReloadResult:
        """Load the configured bundle again; install it only if it loads completely."""
        with self._lock:
            old = self.model_version
            try:
                candidate = self._load()
            except SmartbinError as exc:
                log.error(
                    "model reload refused",
                    extra=fields(reason=reason, error=str(exc), model_version=old),
                )
                return ReloadResult(False, old, old, str(exc))
            except Exception as exc:  # an unexpected runtime failure must not kill the bin
                log.exception("model reload refused", extra=fields(reason=reason))
                return ReloadResult(False, old, old, f"{type(exc).__name__}: {exc}")
            if self.install is not None:
                self.install(candidate)
            self.classifier = candidate
            log.info(
                "model reloaded",
                extra=fields(reason=reason, model_version=candidate.model_version, previous=old),
            )
            return ReloadResult(True, candidate.model_version, old)


class BundleWatcher:
    """Notices a bundle folder whose files changed, once they stopped changing.

    Polls mtimes and sizes (cheap, works on every filesystem, no inotify dependency). A
    change is reported only when two polls in a row agree, so a model still being copied
    is not loaded half-written; each settled state is reported once, so a broken bundle is
    not retried every few seconds (the next copy changes the state again).
    """

    def __init__(self, folder: Path, interval_s: float = 3.0) -> None:
        self.folder = folder
        self.interval_s = interval_s
        self._seen = self._signature()
        self._candidate: tuple | None = None
        self._next = time.monotonic() + interval_s

    def _signature(self) -> tuple:
        entries = []
        try:
            paths = sorted(p for p in self.folder.iterdir() if p.is_file())
        except OSError:
            return ()
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def poll(self, now: float | None = None) -> bool:
        """True once per settled change of the folder."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self.interval_s
        current = self._signature()
        if current == self._seen:
            self._candidate = None
            return False
        if current != self._candidate:
            self._candidate = current  # still changing (or first sight): look again later
            return False
        self._seen = current
        self._candidate = None
        return True
