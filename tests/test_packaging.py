"""The project is a package: ``pip install -e .`` (scripts/setup.sh does it) makes
``python -m launcher`` work from any directory without PYTHONPATH, and the wheel carries every
package and the configs the code reads."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_launcher_runs_without_pythonpath_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "launcher", "ranks", "--config", str(ROOT / "launcher/configs/default.yaml")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "10", out.stderr[-2000:]


def test_the_wheel_has_every_package_and_the_configs(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("secfpp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for top in ("mpc", "prompts", "launcher")
                for p in (ROOT / top).rglob("__init__.py")}
    assert all(f"{p}/__init__.py" in names for p in packages), sorted(packages)
    configs = [str(p.relative_to(ROOT)) for p in (ROOT / "launcher/configs").glob("*.yaml")]
    assert configs and all(c in names for c in configs)
    assert "prompts/configs/secfpp-tiny.json" in names
