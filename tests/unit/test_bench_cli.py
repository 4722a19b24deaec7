"""`python -m disal.bench --help` reads right: every option explains itself, each default is said once."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from disal.bench.__main__ import build_parser  # noqa: E402


def test_every_option_has_help_text():
    parser = build_parser()
    missing = [a.option_strings[0] for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert missing == []


def test_help_states_each_default_once_and_never_none(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapping inside a default
    text = build_parser().format_help()
    assert "(default: None)" not in text
    assert "(default: False)" not in text  # flags (--warm-start)
    assert not re.search(r"\(default: [^)]*\) \(default:", text), "a default named twice"
    assert "(default: packaged all-MiniLM-L6-v2)" in text  # a help that names its own default keeps it
    assert "(default: 3000)" in text  # and the others still get theirs
