"""Progress bars of long CLI work: on stderr, only when it is a terminal."""

from __future__ import annotations

import io
import sys

import pytest

from app.cli import _progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_terminal_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given stderr redirected to a file or a pipe
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)

    # When work advances under a progress bar
    with _progress(3, "replaying notifications") as advance:
        for _ in range(3):
            advance()

    # Then nothing is drawn: logs and pipes keep only the printed counts
    assert captured.getvalue() == ""


def test_a_terminal_gets_a_bar_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given stderr on a terminal
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    # When work advances under a progress bar
    with _progress(3, "replaying dead letters") as advance:
        for _ in range(3):
            advance()

    # Then the bar was drawn there, with its description and count
    assert "replaying dead letters" in terminal.getvalue()
    assert "3/3" in terminal.getvalue()
