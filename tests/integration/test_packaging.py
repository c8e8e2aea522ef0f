"""The distribution as a user installs it: one import namespace, and it works outside the repo.

Builds the wheel from a copy of the source tree (setuptools from the test extras, no network),
then runs it from a directory that has nothing of the repository in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("domain", "events", "projections", "adapters")
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", ".hypothesis", "*.db"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=SKIP)
    subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(work / "dist"), str(source)),
        ],
        check=True,
        timeout=300,
    )
    (built,) = (work / "dist").glob("sessionstore-*.whl")
    return built


def test_the_wheel_installs_only_the_sessionstore_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"sessionstore", f"{wheel.name.split('-py3')[0]}.dist-info"}


def test_the_wheel_holds_every_module_migration_and_the_type_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "sessionstore/" + str(path.relative_to(ROOT))
        for folder in SOURCES
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".sql"} and "__pycache__" not in path.parts
    }
    assert expected, "no sources found"
    assert expected - names == set()
    facade = {"sessionstore/__init__.py", "sessionstore/__main__.py", "sessionstore/py.typed"}
    assert facade <= names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"sessionstore = sessionstore.adapters.cli:main" in entry_points


def test_the_installed_package_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The wheel's copy comes first on the path; the dependencies come from this virtualenv.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")},
        "PYTHONPATH": str(site),
    }
    probe = (
        "import sessionstore, sys\n"
        "print(sessionstore.__file__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('domain', 'events', 'projections', 'adapters')))\n"
    )
    shown = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert Path(shown[0]).is_relative_to(site)
    assert shown[1] == "[]"
    demo = subprocess.run(
        [sys.executable, "-m", "sessionstore", "demo", "--sessions", "2", "--seed", "7"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert "applied migration 0001_event_log" in demo.stdout
    assert (elsewhere / "sessionstore.db").exists()
