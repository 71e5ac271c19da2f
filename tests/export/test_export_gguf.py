"""export --format gguf on tiny random Llamas: the file loads back in transformers' GGUF loader with the same
logits, greedy tokens and token ids, names what a runtime reads, and its Modelfile feeds the prompt as
covertune does. Tolerances (logits of a 2-layer, hidden-64 model, |logit| ~ 1): f16 within 2e-3, q8_0 within
5e-2 (8-bit blocks of 32 values)."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
import torch

from covertune.config.stages import ExportConfig
from covertune.stages.export import export
from covertune.export.gguf_llama import llama3_rope_factors, permute_rotary
from covertune.export.modelfile import runtime_ids, template_of
from covertune.generation.decoding import Decoding
from covertune.generation.letters import generate_token_ids
from covertune.core.prompt import render_prompt, separator_ids, text_ids, wrap_chat

PROMPTS = ["Job Title: Data Scientist\nCompany: Acme Corp", "Dear Hiring Manager, I am writing to apply for",
           "Skills: Python, SQL, 2023 certifications {{ braces }}", "Qualifications: MSc in Statistics"]
RECORD = {"job_title": "Data Scientist", "hiring_company": "Acme", "preferred_qualifications": "SQL",
          "applicant_name": "Ada Lovelace", "current_experience": "Analyst at X", "past_experience": "",
          "skillsets": "Python, SQL", "qualifications": "BSc Mathematics"}


def make_run(tmp_path, model_dir, train_cfg=None, **config_overrides):
    """A run directory whose merged/ is the model in ``model_dir`` (optionally with a changed config)."""
    run = tmp_path / "run"
    merged = run / "merged"
    shutil.copytree(model_dir, merged)
    if config_overrides:
        cfg = json.loads((merged / "config.json").read_text())
        cfg.update(config_overrides)
        (merged / "config.json").write_text(json.dumps(cfg))
    (merged / "covertune_train.json").write_text(json.dumps(train_cfg or {"prompt_format": "raw"}))
    return run


def load_gguf(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file="model.gguf", dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder), gguf_file="model.gguf")


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def field(reader, key):
    return reader.fields[key].contents()


@pytest.fixture(scope="module")
def untied_gqa_dir(tiny_model_dir, tmp_path_factory):
    """The tiny tokenizer with a random Llama whose output matrix is not tied and whose 4 query heads
    share 2 KV heads (so the q and k permutations differ). (No attention biases: llama.cpp reads them,
    but transformers' GGUF loader builds its config without attention_bias and drops them.)"""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False, rope_theta=5000.0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("untied")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("which", ["tied", "untied_gqa"])
def test_f16_round_trip(tiny_model_dir, untied_gqa_dir, tmp_path, which):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model_dir if which == "tied" else untied_gqa_dir
    run = make_run(tmp_path, model_dir)
    msg = export(ExportConfig(out=str(run), format="gguf", quant="f16"))
    folder = run / "export" / "gguf-f16"
    assert "wrote" in msg and (folder / "model.gguf").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "README.md", "covertune_export.json",
                                                       "example_prompt.txt", "model.gguf"]
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")], "temporary folder left behind"

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    back, back_tok = load_gguf(folder)
    assert back.config.tie_word_embeddings == (which == "tied")
    for p in PROMPTS:
        assert back_tok(p).input_ids == tok(p).input_ids
        ids = torch.tensor([tok(p).input_ids])
        a, b = logits(ref, ids), logits(back, ids)
        assert a.abs().max() > 0.1  # a model that outputs something to compare
        torch.testing.assert_close(b, a, atol=2e-3, rtol=0)
    reader = gguf.GGUFReader(str(folder / "model.gguf"))
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) == (which != "tied")
    if which != "tied":
        assert field(reader, "llama.rope.freq_base") == pytest.approx(5000.0)


def test_metadata_a_runtime_reads(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    run = make_run(tmp_path, tiny_model_dir)
    export(ExportConfig(out=str(run), quant="f16", name="my letters"))
    reader = gguf.GGUFReader(str(run / "export" / "gguf-f16" / "model.gguf"))
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.name") == "my letters"
    assert field(reader, "llama.context_length") == 2048
    assert field(reader, "llama.block_count") == 2
    assert field(reader, "llama.attention.head_count") == 4 and field(reader, "llama.attention.head_count_kv") == 2
    assert field(reader, "llama.rope.dimension_count") == 16
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert field(reader, "tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is False  # this tokenizer adds no BOS
    assert field(reader, "tokenizer.chat_template") == tok.chat_template
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(tok) and tokens[tok.eos_token_id] == "<|im_end|>"
    assert types[tok.eos_token_id] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    by_name = {t.name: t.tensor_type for t in reader.tensors}
    assert by_name["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert by_name["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


@pytest.mark.parametrize("quant,atol", [("bf16", 2e-2), ("q8_0", 5e-2), ("q5_1", None), ("q5_0", None), ("q4_0", None)])
def test_quantized_round_trip(tiny_model_dir, tmp_path, quant, atol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = make_run(tmp_path, tiny_model_dir)
    export(ExportConfig(out=str(run), quant=quant))
    folder = run / "export" / f"gguf-{quant}"
    reader = gguf.GGUFReader(str(folder / "model.gguf"))
    by_name = {t.name: t.tensor_type for t in reader.tensors}
    qtype = gguf.GGMLQuantizationType[quant.upper()]
    assert by_name["blk.0.attn_q.weight"] == by_name["blk.1.ffn_down.weight"] == qtype
    finer = gguf.GGMLQuantizationType.Q8_0 if quant.startswith(("q4", "q5")) else qtype
    assert by_name["token_embd.weight"] == finer  # kept in q8_0 with q5_1, q5_0 and q4_0
    assert by_name["output_norm.weight"] == gguf.GGMLQuantizationType.F32

    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    back, _ = load_gguf(folder)
    ids = torch.tensor([tok(PROMPTS[1]).input_ids])
    a, b = logits(ref, ids), logits(back, ids)
    if atol is not None:
        torch.testing.assert_close(b, a, atol=atol, rtol=0)
    else:  # 4- and 5-bit blocks: a looser check, that it is the same model and not noise
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.95
    assert not torch.allclose(a, b, atol=1e-4), "quantized weights should not equal the originals"


def test_same_greedy_tokens_through_covertune_generation(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from covertune.models.load import load_tokenizer

    run = make_run(tmp_path, tiny_model_dir)
    export(ExportConfig(out=str(run)))
    back, back_tok = load_gguf(run / "export" / "gguf-f16")
    back_tok.padding_side = "left"
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    prompts = [render_prompt({**RECORD, "job_title": t}) for t in ("Data Scientist", "Nurse", "Chef")]
    dec = Decoding(max_new_tokens=12)

    def run_gen(model, t):
        ids = [text_ids(p, t, "raw") for p in prompts]
        return {i: r for b, rows in generate_token_ids(model, t, ids, 3, dec) for i, r in zip(b, rows)}

    assert run_gen(back, back_tok) == run_gen(ref, tok)


@pytest.mark.parametrize("prompt_format", ["raw", "chat"])
def test_modelfile_feeds_the_prompt_as_covertune_encodes_it(tiny_model_dir, tmp_path, prompt_format):
    run = make_run(tmp_path, tiny_model_dir, {"prompt_format": prompt_format, "model": "tiny"})
    export(ExportConfig(out=str(run)))
    folder = run / "export" / "gguf-f16"
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0" in modelfile
    assert "PARAMETER num_predict 512" in modelfile and "PARAMETER repeat_penalty 1" in modelfile
    template = template_of(modelfile)
    assert template.count("{{ .Prompt }}") == 1
    _, back_tok = load_gguf(folder)
    sep = separator_ids(back_tok)
    for job in ("Data Scientist", "Nurse {{ night shift }}", ""):
        prompt = render_prompt({**RECORD, "job_title": job})
        text = template.replace('{{ "{{" }}', "\0").replace("{{ .Prompt }}", prompt).replace("\0", "{{")
        fed = runtime_ids(back_tok, text)
        if prompt_format == "chat":
            assert fed == back_tok(wrap_chat(prompt, back_tok), add_special_tokens=False).input_ids
            assert "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n" in template
        else:
            expected = back_tok(prompt).input_ids + sep
            assert fed == expected[:len(fed)] and len(fed) >= len(expected) - 1
    example = (folder / "example_prompt.txt").read_text()
    assert example.startswith("### Job Description\nJob Title: ")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nbase_model: \"tiny\"") and f"Format: `{prompt_format}`" in card


def test_skips_a_complete_export_and_redoes_it_with_force(tiny_model_dir, tmp_path):
    run = make_run(tmp_path, tiny_model_dir)
    assert "wrote" in export(ExportConfig(out=str(run)))
    assert "complete" in export(ExportConfig(out=str(run)))
    assert "wrote" in export(ExportConfig(out=str(run), quant="q8_0"))  # another quant, another folder
    assert "wrote" in export(ExportConfig(out=str(run), force=True))


def test_safetensors_export_is_the_merged_model_with_a_card(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run = make_run(tmp_path, tiny_model_dir, {"prompt_format": "raw", "model": "tiny", "lora_r": 8})
    msg = export(ExportConfig(out=str(run), format="safetensors"))
    folder = run / "export" / "safetensors"
    assert "safetensors" in msg and (folder / "model.safetensors").exists()
    card = (folder / "README.md").read_text()
    assert "library_name: transformers" in card and '"lora_r": 8' in card
    a = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(logits(a, ids), logits(b, ids), atol=0, rtol=0)


def test_llama3_rope_factors_match_transformers():
    """Llama-3.1's rope as llama.cpp's rope_freqs divisors: base frequencies divided by them are the
    frequencies transformers computes for rope_type llama3."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=256, num_attention_heads=2, max_position_embeddings=131072, rope_parameters=rope)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    base = 1.0 / (500000.0 ** (np.arange(0, 128, 2) / 128))
    factors = llama3_rope_factors(rope, 500000.0, 128)
    assert factors.min() == pytest.approx(1.0) and factors.max() == pytest.approx(8.0)
    np.testing.assert_allclose(base / factors, inv_freq.numpy(), rtol=1e-5)


def test_permutation_is_llama_cpp_layout():
    """Per head, Hugging Face keeps the rotary pairs' first halves, then the second halves; llama.cpp
    interleaves them: rows (0, d/2, 1, d/2+1, ...)."""
    n_head, head_dim = 2, 4
    w = np.arange(n_head * head_dim, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    out = permute_rotary(w, n_head)[:, 0]
    assert out.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_adapter_merged_on_the_fly_as_the_merge_stage_merges_it(tiny_model_dir, tmp_path):
    """A run with an adapter and no merged/: the export merges in memory (nothing written to merged/) and
    the file holds what `covertune merge` writes, not the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from covertune.config.stages import MergeConfig
    from covertune.stages.merge import merge

    run = tmp_path / "run"
    torch.manual_seed(5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(run / "adapter")
    (run / "adapter" / "covertune_train.json").write_text(json.dumps(
        {"model": str(tiny_model_dir), "prompt_format": "raw", "quantization": "none"}))
    # the adapter's recipe says its letters end with token 1 (as the shipped model's does): a Modelfile stop
    (run / "adapter" / "recipe.json").write_text(json.dumps({"end_of_letter_token": {"id": 1}}))

    export(ExportConfig(out=str(run), model=str(tiny_model_dir), dtype="fp32"))
    assert not (run / "merged").exists()
    info = json.loads((run / "export" / "gguf-f16" / "covertune_export.json").read_text())
    assert info["origin"]["adapter"] == str(run / "adapter")
    merge(MergeConfig(model=str(tiny_model_dir), out=str(tmp_path / "other"), adapter=str(run / "adapter"),
                      dtype="fp32"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "other" / "merged", dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    back, tok = load_gguf(run / "export" / "gguf-f16")
    end = tok.convert_ids_to_tokens(1)
    assert end != tok.eos_token and f'PARAMETER stop "{end}"' in (run / "export" / "gguf-f16" / "Modelfile").read_text()
    ids = torch.tensor([tok(PROMPTS[0]).input_ids])
    expected = logits(merged, ids)
    assert (expected - logits(original, ids)).abs().max() > 0.05, "the adapter should change the model"
    torch.testing.assert_close(logits(back, ids), expected, atol=2e-3, rtol=0)


def test_llama3_style_tokenizer_with_bos(tmp_path):
    """A Llama-3-style tokenizer (its split rule, then byte-level without a regex; BOS added to every
    text) is written as llama.cpp's "llama-bpe" with add_bos set, reads back the same, and the Modelfile
    leaves the BOS to the runtime."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from covertune.export.gguf_vocab import LLAMA3_SPLIT
    from covertune.core.prompt import TEMPLATE

    from conftest import CHATML, make_tiny_llama

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok.train_from_iterator([TEMPLATE, *PROMPTS] * 3, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|end_of_text|>")
    fast.chat_template = CHATML
    model_dir = tmp_path / "llama3ish"
    make_tiny_llama(fast).save_pretrained(model_dir)
    fast.save_pretrained(model_dir)
    run = make_run(tmp_path, model_dir)
    export(ExportConfig(out=str(run)))
    folder = run / "export" / "gguf-f16"
    reader = gguf.GGUFReader(str(folder / "model.gguf"))
    assert field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    _, back_tok = load_gguf(folder)
    for text in [*PROMPTS, render_prompt(RECORD) + "\n\nDear Ada,\n\n  2024 results"]:
        assert back_tok(text).input_ids == fast(text).input_ids
        assert back_tok(text).input_ids[0] == fast.bos_token_id
    template = template_of((folder / "Modelfile").read_text())
    prompt = render_prompt(RECORD)
    fed = runtime_ids(back_tok, template.replace("{{ .Prompt }}", prompt))
    expected = fast(prompt).input_ids + separator_ids(fast)
    assert fed == expected  # this split rule keeps "\n\n" whole: the whole separator is in the template
