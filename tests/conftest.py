"""Shared fixtures: the read-only shared data folder and a tiny randomly initialised Llama."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COVERTUNE_SHARED", REPO.parent / "shared"))
DATASET_DIR = SHARED / "data" / "cover-letter-dataset"
REFERENCE_DIR = SHARED / "data" / "reference-run"

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _require(path: Path, what: str) -> Path:
    """Skip where the shared data is absent, except in CI, where it is always laid beside the clone."""
    if not path.exists():
        message = f"{what} not found at {path.parent} (set COVERTUNE_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path.parent


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    return _require(DATASET_DIR / "train.csv", "shared dataset")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE_DIR / "eval.csv", "reference run")


def make_tiny_tokenizer(texts: list[str], vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on ``texts`` with ChatML special tokens; pad != eos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def make_tiny_llama(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 64):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def _sample_texts() -> list[str]:
    from covertune.data.sample import sample_path  # noqa: F401  (packaged sample, if built)

    import pandas as pd

    frame = pd.read_csv(sample_path(), keep_default_na=False, dtype=str)
    return [" ".join(row) for row in frame.astype(str).values.tolist()]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A folder holding a tiny random Llama (2 layers, hidden 64) and its BPE tokenizer."""
    from covertune.core.prompt import TEMPLATE

    texts = [TEMPLATE] * 5
    try:
        texts += _sample_texts()
    except Exception:
        if (DATASET_DIR / "train.csv").exists():
            import pandas as pd

            frame = pd.read_csv(DATASET_DIR / "train.csv", keep_default_na=False, dtype=str).head(200)
            texts += [" ".join(row) for row in frame.values.tolist()]
    tokenizer = make_tiny_tokenizer(texts)
    model = make_tiny_llama(tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def varied_tiny_llama(model_dir, seed: int = 1):
    """(model, tokenizer): the tiny Llama in fp32 with larger random weights (std 0.15), left padding. At the
    usual 0.02 init its greedy letters repeat one token, which would not tell decoding paths apart."""
    import torch

    from covertune.models.load import load_model, load_tokenizer

    tok = load_tokenizer(str(model_dir), padding_side="left")
    model = load_model(str(model_dir), "none", "fp32", tokenizer=tok).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=g) * 0.15)
    return model, tok


def engine_token_ids(model, tok, prompts, engine, batch_size, max_new_tokens=20, **decoding):
    """Every prompt's new token ids through covertune's ``engine`` (covertune.generation.letters.generate_token_ids),
    in prompt order; each batch's rows and the whole set of prompts checked on the way."""
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_token_ids

    got = {}
    for batch, rows in generate_token_ids(model, tok, prompts, batch_size, Decoding(max_new_tokens, **decoding),
                                          engine=engine):
        assert len(batch) == len(rows)
        got.update(zip(batch, rows))
    assert sorted(got) == list(range(len(prompts)))
    return [got[i] for i in range(len(prompts))]


def _make_tiny_adapter(model_dir, path, prompt_format="raw", quantization="nf4"):
    """A non-zero LoRA adapter (r=4 on q_proj/v_proj) on the tiny model, with the train stage's config."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(path)
    (path / "covertune_train.json").write_text(json.dumps(
        {"model": str(model_dir), "base_model": str(model_dir), "prompt_format": prompt_format,
         "quantization": quantization}))
    return path


@pytest.fixture(scope="session")
def make_tiny_adapter():
    """``make_tiny_adapter(model_dir, path, prompt_format="raw", quantization="nf4")``: a non-zero LoRA
    adapter on the tiny model in ``path``, with a covertune_train.json as the train stage writes it."""
    return _make_tiny_adapter


@pytest.fixture(scope="session")
def flagged_train_records(dataset_dir) -> list[dict]:
    """The first 320 rows of the shared train split as the data stage writes them: letters cleaned, ids
    ``train-<row>``, quality flags set (letter reuse counted over these rows)."""
    import pandas as pd

    from covertune.core import records
    from covertune.data.clean import clean_records
    from covertune.data.quality import flag_records

    frame = pd.read_csv(dataset_dir / "train.csv", dtype=str, keep_default_na=False).head(320)
    rows = []
    for n, row in enumerate(frame.to_dict("records")):
        rec = records.from_source_row(row)
        rec.update(id=f"train-{n}", missing_fields=[k for k in records.INPUT_FIELDS if not rec[k]])
        rows.append(rec)
    clean_records(rows)
    flag_records(rows)
    return rows


def _short_records(dataset_dir, model_dir, rows: int, letter_chars: int, max_prompt_tokens: int, prefix: str):
    """The first ``rows`` train rows as records, letters cut to ``letter_chars``, keeping those whose prompt is
    shorter than ``max_prompt_tokens`` under the tokenizer of ``model_dir``."""
    import pandas as pd

    from covertune.models import load as models
    from covertune.core.records import from_source_row
    from covertune.training.sft_data import encode_example

    frame = pd.read_csv(dataset_dir / "train.csv", dtype=str, keep_default_na=False).head(rows)
    tok = models.load_tokenizer(str(model_dir))
    out = []
    for n, src in enumerate(frame.to_dict("records")):
        r = from_source_row(src)
        r.update(id=f"{prefix}-{n}", flags=[], missing_fields=[], cover_letter=r["cover_letter"][:letter_chars])
        if encode_example(r, tok, 4096)["prompt_length"] < max_prompt_tokens:
            out.append(r)
    return out


@pytest.fixture(scope="session")
def make_short_records():
    """``make_short_records(dataset_dir, model_dir, rows, letter_chars, max_prompt_tokens, prefix)``: real train
    rows with short letters and prompts, for training a tiny model fast."""
    return _short_records


class CountGenerate:
    """Wraps LlamaForCausalLM.generate: counts calls and can fail on the n-th one (an interruption)."""

    def __init__(self, monkeypatch, fail_on: int | None = None):
        from transformers import LlamaForCausalLM

        self.calls, self.fail_on, original = 0, fail_on, LlamaForCausalLM.generate

        def wrapped(model, *args, **kwargs):
            self.calls += 1
            if self.fail_on is not None and self.calls == self.fail_on:
                raise KeyboardInterrupt("simulated interruption")
            return original(model, *args, **kwargs)

        monkeypatch.setattr(LlamaForCausalLM, "generate", wrapped)
