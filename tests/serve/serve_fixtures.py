"""The served tiny random Llama: one loaded model per session, an app per test (own limits and batcher).

The serve tests import these fixtures by name (a conftest.py here would take the module name `conftest`
from tests/conftest.py, which other tests import helpers from)."""

from __future__ import annotations

import contextlib

import pytest

FIELDS = {
    "job_title": "Data Analyst",
    "hiring_company": "Acme Corp",
    "preferred_qualifications": "SQL, Python and 2 years of reporting",
    "applicant_name": "Jane Doe",
    "current_experience": "Analyst at Foo Labs for 3 years",
    "past_experience": "Intern at Bar Inc",
    "skillsets": "SQL, Python, Tableau",
    "qualifications": "BSc Statistics",
}


@pytest.fixture(scope="session")
def serve_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random Llama with an untied output layer: it writes varied text (a tied one repeats the
    last prompt token, the letter separator, and its letters come out empty)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("serve-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm(serve_model_dir):
    from covertune.config.stages import GenerateConfig
    from covertune.models.letter_model import load_letter_model

    return load_letter_model(GenerateConfig(model=str(serve_model_dir), out="", dtype="fp32"))


@pytest.fixture
def make_client(tiny_lm, monkeypatch):
    """``make_client(**ServeConfig options)`` -> a started TestClient (its worker stops with the test)."""
    from fastapi.testclient import TestClient

    from covertune.config.stages import ServeConfig
    from covertune.serve.app import create_app
    from covertune.serve.engine import Engine

    monkeypatch.delenv("COVERTUNE_API_KEY", raising=False)
    stack = contextlib.ExitStack()

    def make(**options):
        cfg = ServeConfig(**{"max_new_tokens": 24, "form": "auto", **options})
        client = TestClient(create_app(Engine(tiny_lm, cfg), cfg), base_url="http://127.0.0.1:8000")
        return stack.enter_context(client)

    yield make
    stack.close()


@pytest.fixture
def client(make_client):
    return make_client()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_server(tiny_lm, monkeypatch):
    """``make_server(**ServeConfig options)`` -> the base URL of the app under a real uvicorn on a free
    loopback port (stopped with the test)."""
    import threading
    import time

    import uvicorn

    from covertune.config.stages import ServeConfig
    from covertune.serve.app import create_app
    from covertune.serve.engine import Engine

    monkeypatch.delenv("COVERTUNE_API_KEY", raising=False)
    servers = []

    def make(**options):
        cfg = ServeConfig(**{"max_new_tokens": 24, "form": "auto", "port": free_port(), **options})
        app = create_app(Engine(tiny_lm, cfg), cfg)
        srv = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                            timeout_graceful_shutdown=cfg.graceful_timeout_s))
        app.state.server = srv
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        servers.append((srv, thread))
        deadline = time.time() + 30
        while not srv.started:
            assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{cfg.port}", app

    yield make
    for srv, thread in servers:
        srv.should_exit = True
        thread.join(30)
