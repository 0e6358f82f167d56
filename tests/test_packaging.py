"""The wheel holds every package: pyproject lists each folder of harness/ and maps the two plug-in folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.backend_free
def test_pyproject_lists_every_package_and_maps_the_plug_in_folders():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "harness").rglob("__init__.py")}
    mapped = {"harness.architectures": "architectures", "harness.search_spaces": "search_spaces"}
    assert set(config["packages"]) == on_disk | set(mapped), "a package folder is missing from pyproject's list"
    assert config["package-dir"] == mapped
    for folder in mapped.values():
        assert (ROOT / folder / "__init__.py").is_file()


@pytest.mark.backend_free
def test_the_registries_load_the_plug_in_folders_under_the_harness_namespace():
    """Installed or from the source tree, the families and spaces are harness.architectures.* and
    harness.search_spaces.*: no top-level `architectures` package is imported."""
    from harness.registry import ARCHITECTURES, SEARCH_SPACES

    assert ARCHITECTURES.get("cnn").builder.__module__ == "harness.architectures.cnn"
    assert SEARCH_SPACES.get("widen").builder.__module__ == "harness.search_spaces.widen"
    assert "architectures" not in sys.modules and "search_spaces" not in sys.modules


@pytest.mark.backend_free
def test_a_source_checkout_on_the_path_finds_the_plug_in_folders(tmp_path):
    """`python -m harness` in a clone (not installed, or shadowing an installed wheel): harness.architectures is the
    checkout's top-level folder. `-S` keeps site-packages (and an editable install's import hook) out of the way."""
    probe = "import importlib.util as u; print(u.find_spec('harness.architectures').origin)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"} | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-S", "-c", probe]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == ROOT / "architectures" / "__init__.py"
