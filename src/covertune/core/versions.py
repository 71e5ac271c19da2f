"""The versions of the libraries a result was produced with (recorded beside adapters and results)."""

from __future__ import annotations


def versions() -> dict:
    import peft
    import torch
    import transformers

    import covertune

    out = {"covertune": covertune.__version__, "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__}
    try:
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    except Exception:
        pass
    return out
