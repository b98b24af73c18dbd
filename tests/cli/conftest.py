"""Shared helper of the CLI tests: run ``protolens ...`` in-process like the console script does."""

from __future__ import annotations

import sys

import pytest

from protolens.cli import main


def run_cli(monkeypatch, capsys, *args):
    """Run ``protolens ARGS``; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["protolens", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return info.value.code, out.out, out.err
