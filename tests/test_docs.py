"""The README and docs/ say only what the code does: their commands parse, their links resolve.

Every fenced ``bash``/``sh`` block of ``README.md`` and ``docs/*.md`` is split into commands.
Each ``python -m launcher ...`` among them (bare, or under ``mpirun``) must name a real
subcommand whose ``--help`` lists every flag it uses; when it names a config, the config and
its ``key=value`` overrides must load (checked with ``python -m launcher ranks``, which builds
the validated config and nothing else), and an ``mpirun -np N ... run`` must ask for exactly the
processes ``ranks`` says. Every script and config a page names must exist. The cheap commands
(``ranks``, ``source scripts/env.sh``) are run; every other command must start with a prefix of
the manual-runs table in ``docs/tests.md``. Relative links (and their ``#anchors``) must
resolve, and every test file must have a row in the test map. Takes a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TESTS_PAGE = ROOT / "docs" / "tests.md"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: ``NAME=value`` words before a command (``SECFPP_CACHE=$(mktemp -d) bash ...``), shell syntax included
LEADING_ENV = re.compile(r"""^(?:[A-Za-z_]\w*=(?:"[^"]*"|'[^']*'|\$\([^)]*\)|[^\s"']+)\s+)+""")


# ---------------------------------------------------------------- extraction


def _commands(text: str) -> list[tuple[str, list[str], str]]:
    """``(line, argv, trailing comment)`` for every command of every bash/sh fence of ``text``.

    Backslash continuations are joined; a line is split at ``|``, ``&&``, ``;`` and
    redirections, and only the first simple command of a pipeline is kept with its comment.
    """
    out = []
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            line = line.strip()
            lex = shlex.shlex(LEADING_ENV.sub("", line), posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            lex.commenters = ""
            tokens = list(lex)
            comment = ""
            if "#" in tokens:  # shlex kept '#' as a word: everything after it is the comment
                i = tokens.index("#")
                tokens, comment = tokens[:i], " ".join(tokens[i + 1:])
            simple: list[str] = []
            for tok in tokens:
                if tok in OPERATORS or set(tok) <= set("|&;<>"):
                    break
                simple.append(tok)
            while simple and ENV_ASSIGNMENT.match(simple[0]):
                simple.pop(0)
            if simple:
                out.append((line, simple, comment.strip()))
    return out


def _all_commands() -> list[tuple[str, str, list[str], str]]:
    return [(p.name, line, argv, comment) for p in PAGES for line, argv, comment in _commands(p.read_text())]


def _launcher_call(argv: list[str]) -> tuple[int | None, list[str]] | None:
    """``(mpirun -np or None, args after 'python -m launcher')`` or None if not a launcher call."""
    for i in range(len(argv) - 2):
        if argv[i] in ("python", "python3") and argv[i + 1:i + 3] == ["-m", "launcher"]:
            np_ = None
            if argv[0] == "mpirun":
                assert "-np" in argv[:i], f"mpirun without -np: {argv}"
                np_ = int(argv[argv.index("-np") + 1])
            return np_, argv[i + 3:]
    return None


def _manual_prefixes() -> list[list[str]]:
    section = TESTS_PAGE.read_text().split("## Manual runs", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(m) for m in re.findall(r"^\| `([^`]+)` \|", section, re.M)]


COMMANDS = _all_commands()


def _ids(rows):
    return [f"{page}:{line[:60]}" for page, line, *_ in rows]


# ---------------------------------------------------------------- the launcher, in process


def _launcher(args: list[str]) -> tuple[int, str]:
    """Run ``python -m launcher args`` in this process; (exit code, stdout + stderr)."""
    from launcher.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's --help and usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, buf.getvalue()


_HELP: dict[tuple[str, ...], str] = {}


def _help(sub: tuple[str, ...]) -> str:
    if sub not in _HELP:
        code, text = _launcher([*sub, "--help"])
        assert code == 0, f"python -m launcher {' '.join(sub)} --help failed:\n{text}"
        _HELP[sub] = text
    return _HELP[sub]


def _split(args: list[str]) -> tuple[tuple[str, ...], dict[str, str | None], list[str]]:
    """(subcommand path, {--flag: value}, positional key=value overrides)."""
    from launcher.cli import COMMANDS as SUBS

    assert args and args[0] in SUBS, f"python -m launcher {args[:1]}: not one of {sorted(SUBS)}"
    sub: tuple[str, ...] = (args[0],)
    rest = args[1:]
    if args[0] == "bench":
        from launcher.bench import BENCHMARKS

        assert rest and rest[0] in BENCHMARKS, f"bench {rest[:1]}: not one of {sorted(BENCHMARKS)}"
        sub, rest = ("bench", rest[0]), rest[1:]
    flags: dict[str, str | None] = {}
    overrides: list[str] = []
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--"):
            name, eq, value = tok.partition("=")
            if not eq and i + 1 < len(rest) and not rest[i + 1].startswith("--") and "=" not in rest[i + 1]:
                value, i = rest[i + 1], i + 1
            flags[name] = value if (eq or value) else None
        else:
            overrides.append(tok)
        i += 1
    return sub, flags, overrides


# ---------------------------------------------------------------- the tests


def test_the_pages_have_commands():
    assert len(PAGES) >= 8, [p.name for p in PAGES]
    assert any(argv[:2] == ["bash", "scripts/test.sh"] for _, _, argv, _ in COMMANDS), "CI's command left the README"
    assert sum(_launcher_call(argv) is not None for _, _, argv, _ in COMMANDS) >= 20


LAUNCHER = [c for c in COMMANDS if _launcher_call(c[2]) is not None]


@pytest.mark.parametrize("page,line,argv,comment", LAUNCHER, ids=_ids(LAUNCHER))
def test_launcher_command_parses(page, line, argv, comment):
    np_, args = _launcher_call(argv)
    sub, flags, overrides = _split(args)
    text = _help(sub)
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
            f"{page}: `{line}`: {flag} is not a flag of `python -m launcher {' '.join(sub)}`")
    if sub[0] in ("run", "compare", "ranks") and flags.get("--config"):
        config = flags["--config"]
        assert (ROOT / config).is_file(), f"{page}: {config} does not exist"
        # compare runs every method it names: each must load with the overrides
        methods = [f"method={m}" for m in (flags.get("--methods") or "").split(",") if m and sub[0] == "compare"]
        for extra in [[m] for m in methods] or [[]]:
            code, out = _launcher(["ranks", "--config", config, *overrides, *extra])
            assert code == 0, f"{page}: `{line}`: the config or its overrides do not load:\n{out}"
            if np_ is not None and sub[0] == "run":
                assert int(out.split()[-1]) == np_, (
                    f"{page}: `{line}`: mpirun -np {np_}, but `ranks` says {out.strip()}")
    else:
        assert not [o for o in overrides if "=" in o and sub[0] not in ("run", "compare", "ranks")], (
            f"{page}: `{line}`: key=value overrides on a command that takes none")


PATH_TOKEN = re.compile(r"(?<![\w/.-])((?:scripts|launcher/configs)/[\w.-]+\.(?:sh|py|yaml))")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_named_scripts_and_configs_exist(page):
    missing = sorted({m for m in PATH_TOKEN.findall(page.read_text()) if not (ROOT / m).is_file()})
    assert not missing, f"{page.name} names files that do not exist: {missing}"


CODE_PATH = re.compile(r"`((?:mpc|prompts|launcher|tests|scripts|docs)/[\w./*-]*)`")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_named_code_paths_exist(page):
    """Every backticked repository path (``mpc/secpc.py``, ``tests/prompts/*``) exists."""
    missing = sorted({m for m in CODE_PATH.findall(page.read_text()) if not list(ROOT.glob(m.rstrip("/")))})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_cheap_commands_run_and_the_rest_are_listed_manual_runs():
    prefixes = _manual_prefixes()
    assert prefixes, "docs/tests.md has no manual-runs table"
    unlisted = []
    ran = 0
    for page, line, argv, comment in COMMANDS:
        call = _launcher_call(argv)
        if call and call[0] is None and call[1][:1] == ["ranks"]:
            code, out = _launcher(call[1])
            assert code == 0, f"{page}: `{line}` failed:\n{out}"
            expected = re.match(r"(\d+)\b", comment)
            if expected:  # the comment says what it prints
                assert out.split()[-1] == expected.group(1), f"{page}: `{line}` printed {out.strip()}"
            ran += 1
        elif argv[0] in ("source", ".") and len(argv) == 2:
            script = ROOT / argv[1]
            assert script.is_file(), f"{page}: `{line}`: {argv[1]} does not exist"
            subprocess.run(["bash", "-c", f"source {shlex.quote(str(script))}"], check=True, cwd=ROOT)
            ran += 1
        elif not any(argv[:len(p)] == p for p in prefixes):
            unlisted.append(f"{page}: {line}")
        elif argv[0] == "bash":
            assert (ROOT / argv[1]).is_file(), f"{page}: `{line}`: {argv[1]} does not exist"
        elif argv[:3] == ["python", "-m", "pytest"]:
            for arg in argv[3:]:
                if arg.startswith("tests"):
                    assert (ROOT / arg.split("::")[0]).exists(), f"{page}: `{line}`: {arg} does not exist"
    assert ran >= 3
    assert not unlisted, (
        "commands neither run here nor listed under 'Manual runs' in docs/tests.md:\n" + "\n".join(unlisted))


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title.replace("`", ""))
            out.add(title.replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for a, b in LINK.findall(page.read_text()):
        target = a or b
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.name}: broken links: {broken}"


def test_readme_is_a_newcomers_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"


def test_every_test_file_is_in_the_test_map():
    text = TESTS_PAGE.read_text()
    listed = {m for m in re.findall(r"`(tests/[\w/*.]+)`", text)}
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = [f for f in files if not any(Path(f).match(pat) if "*" in pat else f == pat for pat in listed)]
    assert not missing, f"add a row for these to the table in docs/tests.md: {missing}"


def test_the_checks_can_fail():
    """The extraction sees what it must, and the parsing refuses what it must."""
    cmds = _commands("```bash\nFOO=1 mpirun -np 3 python -m launcher run --config x.yaml a=1 \\\n  b=2   # c\n```\n"
                     "```\nnot a command\n```\n")
    assert cmds == [("FOO=1 mpirun -np 3 python -m launcher run --config x.yaml a=1    b=2   # c",
                     ["mpirun", "-np", "3", "python", "-m", "launcher", "run", "--config", "x.yaml", "a=1", "b=2"],
                     "c")]
    assert _launcher_call(cmds[0][1]) == (3, ["run", "--config", "x.yaml", "a=1", "b=2"])
    with pytest.raises(AssertionError):
        _split(["runn"])
    sub, flags, _ = _split(["bench", "cluster", "--rows", "10", "--k-mni", "2"])
    assert "--k-mni" in flags and "--k-mni" not in _help(sub)
    code, _ = _launcher(["ranks", "--config", "launcher/configs/default.yaml", "mpc.kmax=3"])
    assert code != 0
    assert not Path(sys.executable).name.startswith("bash")
