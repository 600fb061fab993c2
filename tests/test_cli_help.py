"""Every flag of every bench sub-command says in one sentence when to use it."""

import argparse

import pytest

from bench.cli import SUBCOMMANDS, build_parser


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_flag_has_help(name):
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    missing = [a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, f"bench {name}: flags without help: {missing}"


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["run", "--help"])
    assert e.value.code == 0 and "--concurrency" in capsys.readouterr().out
