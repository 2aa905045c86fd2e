"""A normal (non-editable) install ships the data files: lab scenarios, blockpage fingerprints
and target lists. Builds a wheel from a copy of the tree, offline (no build isolation), and
reads its file list; without the `wheel` package (setuptools < 70 needs it for a wheel) the
same build_py step that fills a wheel is run alone and its output listed."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _expected() -> set[str]:
    """Every data file in the source package, as a wheel path."""
    package = ROOT / "probe"
    suffixes = {".yaml", ".csv", ".md", ".j2", ".css", ".js", ".proto", ".pyi"}
    files = [p for p in package.rglob("*") if p.is_file() and p.suffix in suffixes
             and "__pycache__" not in p.parts]
    return {p.relative_to(ROOT).as_posix() for p in files}


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "probe", src / "probe",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if importlib.util.find_spec("wheel") is None:
        return _build_py_files(src, out)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", str(src), "-w", str(out)],
        check=True, timeout=240, cwd=src,
    )
    (wheel,) = out.glob("probe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _build_py_files(src: Path, out: Path) -> set[str]:
    """What setuptools' build_py (the step that fills a wheel) copies, as wheel paths."""
    subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
         "--build-lib", str(out)],
        check=True, timeout=240, cwd=src, capture_output=True,
    )
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_wheel_ships_every_data_file(wheel_files: set[str], hostile) -> None:
    expected = _expected()
    with hostile.case("packaging: data files in the wheel"):
        missing = sorted(expected - wheel_files)
    print(f"wheel: {len(wheel_files)} files, {len(expected)} data files expected")
    assert not missing, missing


def test_wheel_ships_the_lab_scenarios_and_blockpages(wheel_files: set[str]) -> None:
    scenarios = {f for f in wheel_files if f.startswith("probe/lab/scenarios/")
                 and f.endswith(".yaml")}
    assert len(scenarios) >= 10 and "probe/lab/scenarios/clean.yaml" in scenarios
    assert "probe/data/blockpages.yaml" in wheel_files
    assert "probe/lab/scenarios/__init__.py" in wheel_files
