"""Third-party log messages that mean nothing to a covertune user stay out of the console.

bitsandbytes warns on import about optional CPU kernels it could not fetch ("Failed to load CPU
gemm_4bit_forward from kernels-community ... trust_remote_code"), on every command, whether or not a
quantized model is used. Such messages from the libraries in ``QUIET_LIBRARIES``, below ERROR, are
demoted to DEBUG: ``-v``/``--verbose`` shows them, a plain run does not. Their errors still show.
"""

from __future__ import annotations

import logging

QUIET_LIBRARIES = ("bitsandbytes", "kernels")


class LibraryNoise(logging.Filter):
    """Demotes a quiet library's records below ERROR to DEBUG, shown only when the root logs DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name.split(".", 1)[0] not in QUIET_LIBRARIES:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_library_logs() -> None:
    """Install the filter on the root logger's handlers (the console, and any log file)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LibraryNoise) for f in handler.filters):
            handler.addFilter(LibraryNoise())
