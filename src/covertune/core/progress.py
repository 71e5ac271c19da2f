"""Progress bars that stay readable in a log file.

On a terminal a bar is tqdm's, redrawn in place. Where stderr is not a terminal (a log file, CI, a pipe),
redrawing in place would leave one line (or one carriage-return-separated blob) per update, thousands of
them for a long stage; there the same bar writes a plain log line through ``logging`` at most every
``log_every`` seconds, and one at the end, each with tqdm's count, rate and time left.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

log = logging.getLogger("covertune.core.progress")

LOG_EVERY_S = 30.0


def is_terminal(stream=None) -> bool:
    """Whether progress goes to a terminal (``COVERTUNE_PROGRESS=log`` or ``bar`` forces one way)."""
    forced = os.environ.get("COVERTUNE_PROGRESS", "").strip().lower()
    if forced in ("log", "bar"):
        return forced == "bar"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _Discard:
    """Where a logging bar's own writes (carriage returns, the final newline) go."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LogLineBar(plain_tqdm):
    """tqdm's bookkeeping (count, rate, time left), shown as a log line at most every ``mininterval``
    seconds instead of a bar redrawn in place."""

    def __init__(self, *args, logger: logging.Logger | None = None, **kwargs):
        self._logger = logger or log
        kwargs["file"] = _Discard()
        kwargs["dynamic_ncols"] = False
        kwargs.setdefault("mininterval", LOG_EVERY_S)
        kwargs["maxinterval"] = max(kwargs["mininterval"], kwargs.get("maxinterval", 0) or 0)
        kwargs.setdefault("miniters", 1)
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) in {elapsed}, "
                                        "{rate_fmt}, about {remaining} left{postfix}")
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if self.n == getattr(self, "_last_logged", None):
            return True  # nothing new since the last line (tqdm redisplays on close)
        self._last_logged = self.n
        self._logger.info("%s", msg or self.__str__())
        return True


def progress_bar(*args, disable: bool = False, log_every: float = LOG_EVERY_S, logger=None, **kwargs):
    """A tqdm bar on a terminal, else a ``LogLineBar`` writing a line at most every ``log_every`` s."""
    if disable or is_terminal():
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(*args, disable=disable, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    return LogLineBar(*args, mininterval=log_every, logger=logger, **kwargs)


def quiet_library_bars() -> None:
    """Where stderr is not a terminal, switch off the per-item bars of transformers and the Hugging Face
    hub (weight loading, downloads): in a log they add lines without telling anything."""
    if is_terminal():
        return
    # read when huggingface_hub is imported, and by transformers through it: a command that never imports
    # them (a llama.cpp letter) does not pay their import for this
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def library_bars(module_name: str):
    """While inside, the bars a library module draws with its own ``tqdm`` (transformers' GGUF conversion)
    are ``progress_bar``s where stderr is not a terminal: log lines instead of carriage returns."""
    module = importlib.import_module(module_name)
    if is_terminal() or not hasattr(module, "tqdm"):
        yield
        return
    original = module.tqdm
    module.tqdm = progress_bar
    try:
        yield
    finally:
        module.tqdm = original
