"""Third-party warnings (bitsandbytes' kernel fetch) stay out of the console unless --verbose."""

from __future__ import annotations

import io
import logging

import pytest

from covertune.core.library_logs import quiet_library_logs

BNB = "Failed to load CPU gemm_4bit_forward from kernels-community: trust_remote_code"


@pytest.fixture
def console(monkeypatch):
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    monkeypatch.setattr(root, "handlers", [handler])
    level = root.level
    yield stream
    root.setLevel(level)


@pytest.mark.parametrize("verbose", [False, True])
def test_bitsandbytes_warnings_only_with_verbose(console, verbose):
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_library_logs()
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(BNB)
    logging.getLogger("covertune.stages.generate").warning("a warning of covertune's own")
    logging.getLogger("bitsandbytes").error("a real bitsandbytes error")
    text = console.getvalue()
    assert (BNB in text) == verbose
    assert "a warning of covertune's own" in text and "a real bitsandbytes error" in text


def test_the_cli_installs_the_filter(console, capsys):
    from covertune.cli import main

    main(["report", "--out", "/nonexistent/run"])  # any command: the filter goes on before it runs
    logging.getLogger("bitsandbytes.cextension").warning(BNB)
    assert BNB not in console.getvalue()
