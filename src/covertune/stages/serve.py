"""`covertune serve`: the model loaded once and served over HTTP (covertune.serve.app).
"""

from __future__ import annotations

import logging
import os

from covertune.classify.model import load_classifier
from covertune.config.stages import ServeConfig
from covertune.generation.letter_engines import load_letter_model
from covertune.models.recipe import resolve_letter_model
from covertune.serve.app import API_KEY_ENV, check_config, create_app
from covertune.serve.engine import Engine

log = logging.getLogger(__name__)


def build_engine(cfg: ServeConfig):
    resolve_letter_model(cfg)  # the shipped model when none is named; the recipe of the model loaded
    check_config(cfg)
    classifier = None
    if cfg.classifier or (cfg.select == "classifier-mbr" and cfg.candidates > 1):  # before the model loads
        classifier, _ = load_classifier(cfg.classifier, cfg.out)
    lm = load_letter_model(cfg.engine, cfg, quant=cfg.gguf_quant, threads=cfg.threads)
    log.info("serving %s", lm.source)
    engine = Engine(lm, cfg)
    engine.classifier = classifier
    return engine


def serve(cfg: ServeConfig) -> str:
    import uvicorn

    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        key = cfg.api_key or os.environ.get(API_KEY_ENV, "")
        log.warning("binding %s: the server is reachable from other machines%s", cfg.host,
                    "" if key else " and has no API key (set COVERTUNE_API_KEY)")
        if cfg.host in ("0.0.0.0", "::") and not cfg.allowed_hosts:
            log.warning("only loopback host names are served; name the ones clients use with --allowed-hosts")
    app = create_app(build_engine(cfg), cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                timeout_graceful_shutdown=cfg.graceful_timeout_s)
    return "serve: stopped"
