"""Progress bars: tqdm on a terminal, a few plain log lines in a log file."""

from __future__ import annotations

import io
import logging

import pytest

from covertune.core import progress


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def not_a_terminal(monkeypatch):
    monkeypatch.setenv("COVERTUNE_PROGRESS", "log")


def test_is_terminal(monkeypatch):
    monkeypatch.delenv("COVERTUNE_PROGRESS", raising=False)
    assert not progress.is_terminal(io.StringIO())

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress.is_terminal(Tty())
    monkeypatch.setenv("COVERTUNE_PROGRESS", "log")
    assert not progress.is_terminal(Tty())
    monkeypatch.setenv("COVERTUNE_PROGRESS", "bar")
    assert progress.is_terminal(io.StringIO())


def test_log_lines_at_most_every_interval(not_a_terminal, monkeypatch, caplog):
    clock = _Clock()
    monkeypatch.setattr("tqdm.std.time", clock)
    caplog.set_level(logging.INFO, logger="covertune.core.progress")
    bar = progress.progress_bar(total=1000, desc="letters", unit="letter", log_every=30)
    assert isinstance(bar, progress.LogLineBar)
    for _ in range(1000):  # 1000 updates over 100 simulated seconds
        clock.t += 0.1
        bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "covertune.core.progress"]
    # the opening line, one about every 30 s, and the last: a handful, not a thousand
    assert 3 <= len(lines) <= 6, lines
    assert lines[0].startswith("letters: 0/1000")
    assert lines[-1].startswith("letters: 1000/1000 (100%)")
    assert all("\r" not in line and "\n" not in line for line in lines)


def test_disabled_and_terminal_bars_are_tqdm(monkeypatch):
    monkeypatch.setenv("COVERTUNE_PROGRESS", "bar")
    bar = progress.progress_bar(total=3, file=io.StringIO())
    assert not isinstance(bar, progress.LogLineBar)
    bar.close()
    monkeypatch.setenv("COVERTUNE_PROGRESS", "log")
    bar = progress.progress_bar(total=3, disable=True)
    assert not isinstance(bar, progress.LogLineBar) and bar.disable
    bar.close()


def test_a_library_bar_becomes_a_log_line_in_a_log(monkeypatch, capfd, caplog):
    """transformers' GGUF conversion bar (its own tqdm) goes through covertune's progress where stderr is
    not a terminal: a log line, no carriage returns."""
    import logging

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from covertune.core.progress import library_bars

    monkeypatch.setenv("COVERTUNE_PROGRESS", "log")
    caplog.set_level(logging.INFO)
    original = gguf_utils.tqdm
    with library_bars("transformers.modeling_gguf_pytorch_utils"):
        assert sum(gguf_utils.tqdm(range(5), desc="Converting and de-quantizing GGUF tensors...")) == 10
    assert gguf_utils.tqdm is original
    assert "\r" not in capfd.readouterr().err
    assert any("Converting and de-quantizing GGUF tensors...: 5/5" in r.getMessage() for r in caplog.records)


def test_library_bars_are_off_in_a_log_without_importing_the_libraries():
    """Where stderr is not a terminal, the bars of transformers and the hub are off once they are imported,
    and switching them off imported neither (a llama.cpp letter never needs them)."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "os.environ.pop('HF_HUB_DISABLE_PROGRESS_BARS', None)\n"
            "from covertune.core.progress import quiet_library_bars\n"
            "quiet_library_bars()\n"
            "print('transformers' in sys.modules, 'huggingface_hub' in sys.modules)\n"
            "from transformers.utils import logging\n"
            "from huggingface_hub.utils import are_progress_bars_disabled\n"
            "print(logging.is_progress_bar_enabled(), are_progress_bars_disabled())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False", "True"]
