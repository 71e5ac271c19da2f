"""Text from inputs and options placed in the Markdown and HTML documents covertune writes.

Markdown passes raw HTML through to most renderers, so text outside a code block is HTML-escaped, and a
``|`` would end a table cell, so it is escaped too; NUL characters (which HTML forbids and viewers show
as nothing or cut the text at) become U+FFFD, the replacement character HTML parsers use. Paths are shown
relative to the run directory when they lie inside it, so a document does not carry the folders of the
machine that wrote it.
"""

from __future__ import annotations

import html
import os
from pathlib import Path


def no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def md_inline(text) -> str:
    """``text`` safe in a Markdown line or table cell: HTML-escaped, ``|`` escaped, on one line, no NUL."""
    text = html.escape(no_nul(str(text)), quote=False).replace("|", "\\|")
    return " ".join(text.splitlines())


def run_relative(path, run) -> str:
    """``path`` relative to the run directory ``run`` when inside it, else as given."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return os.path.relpath(p.resolve(), Path(run).resolve()) if p.resolve().is_relative_to(
            Path(run).resolve()) else str(p)
    except (OSError, ValueError):
        return str(p)


def shown_path(path, run) -> str:
    """``path`` as a document shows it: relative to the run directory when inside it, else its name only
    (the folders of the machine that wrote it mean nothing elsewhere)."""
    shown = run_relative(path, run)
    return Path(shown).name if Path(shown).is_absolute() else shown

