"""An adapter runs on the base model it was trained on, with finite weights.

- Which base: the one the train stage recorded (``covertune_train.json``'s ``model``), else the adapter's
  own ``adapter_config.json`` (``base_model_name_or_path``). When ``--model`` is left at its default, that
  base is used; a ``--model`` naming another model is a one-line error naming both (``base_model``).
- Shapes: an adapter whose matrices do not fit the base (a base folder replaced since training) is a
  one-line error naming the adapter, the base and the first mismatching weight (``load_peft``), not
  peft's list of every mismatch.
- Weights: NaN or infinite values in the adapter's safetensors (an overwritten file whose header is
  intact) are refused before anything is generated (``check_weights``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)


def trained_base(train_cfg: dict, adapter) -> str | None:
    """The base model the adapter was trained on, as recorded, or None when nothing says."""
    if train_cfg.get("model"):
        return str(train_cfg["model"])
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return str(name) if name else None


def _same(a: str, b: str) -> bool:
    from covertune.models import load as models

    if a == b:
        return True
    try:
        return models.resolve_model(a) == models.resolve_model(b)
    except Exception:  # a model not available here is not the same as one that is
        return False


def base_model(model: str, train_cfg: dict, adapter) -> str:
    """The base to load under ``adapter``: ``model`` when it was named (it must be the trained base), the
    trained base when ``model`` is the default."""
    from covertune.config.options import EMBEDDED_MODEL

    trained = trained_base(train_cfg, adapter)
    if not trained or _same(trained, model):
        return model
    if model == EMBEDDED_MODEL:
        log.info("using %s, the base model the adapter in %s was trained on", trained, adapter)
        return trained
    raise ValueError(f"the adapter in {adapter} was trained on {trained}, not on --model {model}: leave --model out "
                     f"to use {trained}, or use an adapter trained on {model}")


# the float types of the safetensors format: (the raw words' numpy type, the exponent bits; all set: inf or NaN)
_FLOAT_BITS = {"F64": ("<u8", 0x7FF0000000000000), "F32": ("<u4", 0x7F800000), "F16": ("<u2", 0x7C00),
               "BF16": ("<u2", 0x7F80)}


def check_weights(folder) -> None:
    """Every tensor of the adapter's safetensors files is finite, else a one-line error naming one. The
    values are read as the raw words the file's header describes (no torch: a llama.cpp letter starts
    without it; bf16 has no numpy type): a float is infinite or NaN exactly when its exponent bits are all set."""
    import numpy as np

    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            start = 8 + size
            for name, info in header.items():
                bits = _FLOAT_BITS.get(info.get("dtype")) if name != "__metadata__" else None
                if bits is None:
                    continue
                begin, end = info["data_offsets"]
                f.seek(start + begin)
                words = np.frombuffer(f.read(end - begin), dtype=bits[0])
                if bool(((words & bits[1]) == bits[1]).any()):
                    raise ValueError(f"{path}: weight {name} holds values that are not finite (NaN or infinity); "
                                     "the file was overwritten or training diverged: train again (--force)")


_MISMATCH = re.compile(r"size mismatch for ([^:]+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) "
                       r"from checkpoint, the shape in current model is (torch\.Size\(\[[^\]]*\]\))")


def load_peft(base, adapter, base_name: str, **kwargs):
    """``PeftModel.from_pretrained(base, adapter)``; a shape mismatch is one line naming both models."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, str(adapter), **kwargs)
    except RuntimeError as e:
        found = _MISMATCH.search(str(e))
        if not found:
            raise
        name, theirs, ours = found.groups()
        count = str(e).count("size mismatch for")
        raise ValueError(f"the adapter in {adapter} does not fit the base model {base_name}: weight {name} has shape "
                         f"{list(_dims(theirs))} in the adapter and {list(_dims(ours))} in the model "
                         f"({count} weight(s) differ); it was trained on another model: pass that one with --model"
                         ) from None


def _dims(text: str) -> tuple[int, ...]:
    """The numbers of a printed ``torch.Size([a, b])``."""
    return tuple(int(n) for n in re.findall(r"\d+", text))
