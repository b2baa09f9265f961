"""The wheel must contain every package: setuptools' `packages` list is not recursive,
and an editable install hides a missing subpackage."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"varpd_plugins": "plugins", "varpd_kmod": "kmod-shim"}


def _source_packages() -> set[str]:
    found = set()
    for init in ROOT.glob("varpd/**/__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for name, folder in MAPPED.items():
        for init in (ROOT / folder).glob("**/__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(ROOT / folder).parts)))
    return found


def test_every_package_is_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert _source_packages() <= declared, f"missing from pyproject packages: {_source_packages() - declared}"


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("varpd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in _source_packages():
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, pkg
    assert "varpd_kmod/netlink.py" in names and "varpd_plugins/files.py" in names
