"""The install a bin gets is a wheel, not this checkout.

``firmware_config/install.sh`` runs ``pip install '.[device,pi]'``: setuptools builds a wheel
from the package map in pyproject.toml and the checkout is no longer on the path. A module or
data file the map forgets (the shipped model bundle, the dashboard page) works in every
editable development install and is missing on every bin, so this test builds the wheel from
the tracked files alone, installs it into an empty folder and runs the bin's first command
from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Top-level folder -> where it is installed (``device`` -> ``smartbin/device``), read from
#: pyproject's ``package-dir`` so that this test checks the map setuptools is given.
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIRS = {
    folder: package.replace(".", "/")
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()
}
SAMPLE = ROOT / "tests" / "data" / "trashnet" / "glass" / "glass100.jpg"


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    done = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
    return [name for name in done.stdout.decode().split("\0") if name]


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, list[str]]:
    """The wheel built from a copy of the tracked files, and those files."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    tracked = _tracked_files()
    for name in tracked:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():  # a file deleted but not yet committed is skipped
            shutil.copy2(ROOT / name, target)
    built = _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(work / "dist"),
        str(source),
        cwd=work,
    )
    assert "BuildBackendWarning" not in built.stdout + built.stderr, built.stderr[-3000:]
    (path,) = (work / "dist").glob("smartbin-*.whl")
    return path, tracked


def test_the_wheel_holds_every_module_and_the_shipped_bundle(wheel):
    path, tracked = wheel
    names = set(zipfile.ZipFile(path).namelist())
    expected = {
        f"{PACKAGE_DIRS[name.split('/', 1)[0]]}/{name.split('/', 1)[1]}"
        for name in tracked
        if name.endswith(".py") and name.split("/", 1)[0] in PACKAGE_DIRS and "/" in name
    }
    assert "smartbin/device/classifier.py" in expected  # the map above matches the layout
    assert expected - names == set()
    for data in (
        "smartbin/device/default_bundle/bundle.json",
        "smartbin/device/default_bundle/model.tflite",
        "smartbin/dashboard/page.html",
    ):
        assert data in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith(("tests/", "runs/", "train/", "device/")) for name in names)


def test_the_installed_wheel_classifies_with_the_default_bundle(wheel, tmp_path):
    path, _ = wheel
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(path), cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import sys, smartbin.device.preprocess as p; print(p.__file__, file=sys.stderr); "
        "from smartbin.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "classify", "default", str(SAMPLE)],
        cwd=tmp_path,  # not the checkout: nothing may come from it
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.splitlines()[0].startswith(str(site)), done.stderr[:500]
    assert "glass100.jpg" in done.stdout
    assert "glass" in done.stdout.split("glass100.jpg", 1)[1]
