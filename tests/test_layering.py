"""The layering rule, checked on the source: ``mpc/`` never imports ``prompts/`` (or the
launcher), ``prompts/`` never imports ``mpc/``, the launcher or CrypTen; a prompt crosses
between them as a plain tensor, joined in ``launcher/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"mpc": ("prompts", "launcher"), "prompts": ("mpc", "launcher", "crypten")}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_the_other_side(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for mod in imported_modules(path):
            if mod.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    """The scanner is not vacuous: an import of the other side is found."""
    f = tmp_path / "leak.py"
    f.write_text("def f():\n    from prompts.learner import PromptLearner\n")
    assert "prompts.learner" in imported_modules(f)


def test_importing_mpc_does_not_import_crypten_or_prompts():
    code = "import sys, mpc; print(sorted(m for m in ('crypten', 'prompts', 'launcher') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
