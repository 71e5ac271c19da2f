#!/usr/bin/env python
"""What `covertune train` chooses on this machine's CPU for a preset (covertune.training.train_fit.plan_cpu), without
training: the preset's model and LoRA adapter are built, one sequence of ``--length`` tokens is measured
(forward and backward, twice), and the micro-batch, accumulation, expected peak memory and time are logged.

    OMP_NUM_THREADS=2 python bench/cpu_train_plan.py --preset smol --length 595 --tokens 223500
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="smol")
    ap.add_argument("--length", type=int, required=True, help="the longest training example, in tokens")
    ap.add_argument("--tokens", type=int, required=True, help="training tokens of one epoch")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from covertune.models import load as models
    from covertune.config.build import build, load_preset
    from covertune.training.trainer import add_lora
    from covertune.training.train_fit import plan_cpu

    cfg = build("train", load_preset(args.preset))
    tokenizer = models.load_tokenizer(cfg.model, padding_side="right")
    torch.manual_seed(cfg.seed)
    model = add_lora(models.load_model(cfg.model, cfg.quantization, cfg.compute_dtype, tokenizer=tokenizer), cfg)
    print(plan_cpu(model, cfg.batch_size, cfg.grad_accum, args.length, args.tokens, cfg.epochs,
                   cfg.gradient_checkpointing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
