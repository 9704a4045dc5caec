"""Swapping the model while the bin runs, and never for a broken one.

Why: a new model is copied onto a bin (or pushed by a fleet tool) while it sorts. The new
bundle is loaded and verified completely (manifest, sha256, interpreter, output tensors)
*beside* the running one; only a bundle that loads replaces it. A broken bundle is refused,
the old model keeps sorting, and the refusal is returned for the daemon to log and report.

The runtime memory-maps its model file, so the running model must never be the bundle's own
file: ``cp new.tflite model.tflite`` truncates and rewrites it in place, and a running
interpreter mapped onto it dies of SIGBUS at its next inference. :func:`pinned_bundle`
therefore reads each model file once, checks the sha256 of exactly those bytes (no window
between the check and the load) and hands the runtime a private copy in anonymous memory
(``memfd``); whatever happens to the bundle folder afterwards, the running model is intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from smartbin.device.bundle import ModelBundle, load_bundle, resolve_bundle_path
from smartbin.device.classifier import Classifier
from smartbin.device.logsetup import fields
from smartbin.errors import BundleError, SmartbinError

log = logging.getLogger(__name__)


def _pin_file(path: Path, expected_sha256: str, fds: list[int]) -> Path:
    """``path``'s bytes, verified, as an anonymous in-memory file; its /proc path."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the model ({exc.strerror})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}... does not match the manifest's "
            f"{expected_sha256[:12]}... (file changed while loading, or corrupt)"
        )
    fd = os.memfd_create(f"smartbin-{path.name}", os.MFD_CLOEXEC)
    fds.append(fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return Path(f"/proc/self/fd/{fd}")


@contextlib.contextmanager
def pinned_bundle(bundle: ModelBundle) -> Iterator[ModelBundle]:
    """``bundle`` with its model files replaced by verified in-memory copies, for as long as
    the interpreter is being created (the runtime's own mapping keeps the copy alive after
    the descriptor is closed). Where memfd is missing (not Linux), the files themselves."""
    if not hasattr(os, "memfd_create"):  # pragma: no cover - the bin runs on Linux
        yield bundle
        return
    fds: list[int] = []
    try:
        model = _pin_file(bundle.model_file, bundle.model_sha256, fds)
        edgetpu = None
        if bundle.edgetpu_file is not None:
            expected = str(bundle.manifest["model"].get("edgetpu_sha256", ""))
            edgetpu = _pin_file(bundle.edgetpu_file, expected, fds)
        yield dataclasses.replace(bundle, model_file=model, edgetpu_file=edgetpu)
    finally:
        for fd in fds:
            os.close(fd)


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
        bundle = load_bundle(self.spec)  # manifest, schema, labels, hashes of the files
        with pinned_bundle(bundle) as pinned:
            try:
                classifier = Classifier(
                    pinned, num_threads=self.num_threads, use_edgetpu=self.use_edgetpu
                )
            except BundleError as exc:  # name the bundle's file, not the private copy
                message = str(exc).replace(str(pinned.model_file), str(bundle.model_file))
                if pinned.edgetpu_file is not None:
                    message = message.replace(str(pinned.edgetpu_file), str(bundle.edgetpu_file))
                raise BundleError(message) from None
        # Report the bundle's real paths, not the /proc ones of the private copy.
        classifier.bundle = bundle
        return classifier

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
