"""``segkit --help`` and the help of every command and ``analyze`` tool: each renders, each command is
listed in the top-level help (in the order of ``segkit.cli.COMMANDS``) and shows an example; building
the parser stays cheap (no PyTorch import). Stable properties only, not the text itself."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from segkit.cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]
NAMES = [command.NAME for command in COMMANDS]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0, argv
    return capsys.readouterr().out


def test_every_command_module_builds_its_parser():
    for command in COMMANDS:
        assert isinstance(command.NAME, str) and callable(command.run), command.__name__
        parser = command.add_parser(argparse.ArgumentParser().add_subparsers())
        assert isinstance(parser, argparse.ArgumentParser) and parser.prog.endswith(command.NAME)
    assert len(set(NAMES)) == len(NAMES)
    assert list(_subparsers(build_parser())) == NAMES


def test_top_level_help_lists_every_command_in_order(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = _help([], capsys)
    assert out.startswith("usage: segkit ") and "Run `segkit COMMAND -h`" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line[4:5].strip()]
    assert listed == NAMES  # each command on its own line, with its one-line help beside or below it
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flat = " ".join(out.split())  # (argparse wraps long lines)
    for choice in sub._choices_actions:  # the one-line help beside each command
        assert choice.help and " ".join(choice.help.split()) in flat, choice.dest


@pytest.mark.parametrize("name", NAMES)
def test_each_command_help_renders_with_an_example(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = _help([name], capsys)
    assert out.startswith(f"usage: segkit {name} ")
    example = out.split("\nexample:\n", 1)[-1].splitlines()
    assert "\nexample:\n" in out and any(line.startswith(f"  segkit {name} ") for line in example)
    assert "options:" in out and "-h, --help" in out


def test_each_analyze_tool_help_renders_with_an_example(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    tools = _subparsers(_subparsers(build_parser())["analyze"])
    assert set(tools) == {"layers", "erf", "features", "attention", "gradcam", "sizes"}
    for tool in tools:
        out = _help(["analyze", tool], capsys)
        assert out.startswith(f"usage: segkit analyze {tool} ")
        example = out.split("\nexample:\n", 1)[-1].splitlines()
        assert "\nexample:\n" in out and any(line.startswith(f"  segkit analyze {tool} ") for line in example)


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from segkit.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "False", r.stderr


def test_python_dash_m_segkit_shows_the_help():
    r = subprocess.run(
        [sys.executable, "-m", "segkit", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert r.returncode == 0 and r.stdout.startswith("usage: segkit ")
    assert all(name in r.stdout for name in NAMES)
