"""Helpers of the export tests that run an exported GGUF in llama.cpp itself (llama-cpp-python), and render a
Modelfile's TEMPLATE as Ollama does (Go's text/template).

llama-cpp-python is the ``llamacpp`` extra, which ``make test`` installs: where it is absent the llama.cpp
tests are skipped with the reason, except in CI (``CI`` set), where its absence is a failure.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re

import numpy as np
import pytest


def require_llama_cpp():
    """The ``llama_cpp`` module; skips (fails in CI) where llama-cpp-python is not installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        message = "llama-cpp-python is not installed (pip install 'covertune[llamacpp]'; make test installs it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    import llama_cpp

    return llama_cpp


def load(path, n_ctx: int = 1024, lora: str | None = None):
    """An exported GGUF in llama.cpp, every position's logits kept (teacher forcing), CPU, 2 threads."""
    llama_cpp = require_llama_cpp()
    kwargs = {"lora_path": str(lora)} if lora else {}
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                           n_threads=2, n_gpu_layers=0, verbose=False, **kwargs)


def runtime_tokenize(llm, text: str) -> list[int]:
    """How llama.cpp (and Ollama, which renders the template first) tokenizes a whole prompt text: special
    tokens parsed, BOS added as the file says (tokenizer.ggml.add_bos_token)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def logits(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position of ``ids`` (one sequence, from an empty cache)."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


# Go text/template, for what covertune's Modelfiles use: text, {{ .Field }}, string literals ({{ "{{" }}),
# comments, and the {{- / -}} trim markers. Anything else is an error, not a guess.
_LITERAL = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`', re.S)


def _actions(template: str):
    """(start, end, trim_left, body, trim_right) for each action; "}}" inside a string literal stays in it."""
    pos = 0
    while (start := template.find("{{", pos)) >= 0:
        i = start + 2
        trim_left = template[i:i + 2] in ("- ", "-\t", "-\n")
        while True:
            if i >= len(template):
                raise ValueError(f"unclosed action at {start}")
            if template[i] in '"`':
                m = _LITERAL.match(template, i)
                if not m:
                    raise ValueError(f"unterminated string literal at {i}")
                i = m.end()
            elif template.startswith("}}", i):
                break
            else:
                i += 1
        inner = template[start + 2:i]
        trim_right = inner[-2:] in (" -", "\t-", "\n-")
        body = inner[2 if trim_left else 0: len(inner) - 2 if trim_right else len(inner)].strip()
        yield start, i + 2, trim_left, body, trim_right
        pos = i + 2


def _go_string(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    return ast.literal_eval(literal)  # Go's interpreted-string escapes used here (\\, \", \n, \t, \x, \u) read alike


def render_go_template(template: str, data: dict) -> str:
    """``template`` executed as Go's text/template executes it with ``data`` as the dot (no HTML escaping)."""
    out: list[str] = []
    pos = 0
    for start, end, trim_left, body, trim_right in _actions(template):
        text = template[pos:start]
        out.append(text.rstrip(" \t\r\n") if trim_left else text)
        if body.startswith("/*") and body.endswith("*/"):
            value = ""
        elif re.fullmatch(r"\.[A-Za-z_][A-Za-z0-9_]*", body):
            if body[1:] not in data:
                raise KeyError(f"template field {body} has no value")
            value = str(data[body[1:]])
        elif _LITERAL.fullmatch(body):
            value = _go_string(body)
        else:
            raise NotImplementedError(f"template action {{{{ {body} }}}} is not rendered by this test helper")
        out.append(value)
        pos = end
        if trim_right:
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
    out.append(template[pos:])
    return "".join(out)
