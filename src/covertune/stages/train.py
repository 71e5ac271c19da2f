"""covertune train: LoRA / QLoRA supervised fine-tuning with the transformers Trainer.

``train(cfg)`` reads top to bottom: the data stage's splits -> tokenizer and tokenized examples
(covertune.training.sft_data: prompt-masked labels, truncation policy) -> base model (4-bit, 8-bit or not
quantized) -> LoRA adapter -> Trainer (validation loss and a checkpoint each epoch, resumable) ->
``<out>/adapter/`` (adapter, tokenizer, covertune_train.json, model card: covertune.models.card),
``<out>/train_log.jsonl`` and ``<out>/loss.png`` (covertune.training.train_log).

Works with transformers 5.17 and later (warmup as a float ``warmup_steps``, the sampler named by
``train_sampling_strategy``, activation checkpointing under either of its two argument names).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import warnings
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from covertune.config.build import flag_weight_map, to_dict, validate
from covertune.config.options import EMBEDDED_MODEL
from covertune.config.stages import TrainConfig
from covertune.core import distributed, io, rundir
from covertune.core.progress import is_terminal
from covertune.core.records import FLAGS_FIELD
from covertune.core.versions import versions
from covertune.models import load as models
from covertune.models.card import adapter_card
from covertune.training import checkpoint_choice, flag_weights, padding_free, tracking
from covertune.training.sft_data import LOSS_WEIGHT, PadCollator, encode_records
from covertune.training.train_log import JsonlLogger, plot_loss, trim_log
from covertune.training.trainer import CHECKPOINTS_FINGERPRINT, GlobalBatchTrainer, MemoryCallback, add_lora, check_checkpoints, checkpoint_step, checkpointing_args, fsdp_args, good_checkpoint, optimizer_name, process_batch, use_liger

log = logging.getLogger(__name__)


# Options that do not change the adapter: where and how often things are logged or saved, and the
# speed levers that compute the same training (padding-free batches, fused kernels, compilation,
# activation checkpointing, the attention kernel). Every other option is in the stage's fingerprint.
NOT_IN_FINGERPRINT = ("out", "force", "resume", "trust_remote_code", "logging_steps", "eval_strategy",
                      "eval_steps", "save_strategy", "save_steps", "save_total_limit", "gradient_checkpointing",
                      "padding_free", "liger_kernel", "torch_compile", "attn_implementation", "distributed")


def fingerprint(cfg: TrainConfig) -> dict:
    """What the adapter is built from: the options that change it, the splits' hashes and, for a local
    base model, its folder's identity (rundir.model_identity). flag_weights counts as {flag: weight}, and
    only when set (a run made before the option existed keeps its fingerprint)."""
    out = Path(cfg.out)
    settings = {k: v for k, v in to_dict(cfg).items()
                if k not in NOT_IN_FINGERPRINT and k not in checkpoint_choice.OPTIONS}
    weights = settings.pop("flag_weights")
    if weights:
        settings["flag_weights"] = dict(sorted(flag_weight_map(weights).items()))
    settings.update(checkpoint_choice.fingerprint_options(cfg))  # how the adapter is chosen, where it matters
    inputs = {f"data/{s}.jsonl": rundir.path_hash(rundir.split_path(out, s)) for s in ("train", "validation")}
    if cfg.model not in ("", EMBEDDED_MODEL) and Path(cfg.model).expanduser().is_dir():
        inputs["model"] = rundir.model_identity(cfg.model)
    return rundir.fingerprint(settings, inputs)


def train(cfg: TrainConfig) -> str:
    out = Path(cfg.out)
    adapter_dir, ckpt_dir = rundir.adapter_dir(out), rundir.checkpoints_dir(out)
    log_path, plot_path = rundir.train_log(out), rundir.loss_plot(out)
    check_config(cfg)
    rundir.check_out(out)
    # under torchrun / accelerate launch: one process per GPU (CPU: gloo), the main one writes the outputs
    processes, main = distributed.world_size(), distributed.is_main()
    if processes > 1:
        distributed.state()  # join the process group before the first barrier
    fp = fingerprint(cfg)
    if not cfg.resume and rundir.check_stage(out, "train", fp, rundir.has_adapter(adapter_dir), cfg.force,
                                             str(adapter_dir)):
        return (f"train: {adapter_dir} is complete; skipped (--force retrains, --resume continues "
                f"from the last checkpoint)")
    # peft 0.21 still asks for the pre-5.24 attribute name; nothing for a user to act on
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    # ---- fresh start or continue: the same command continues an interrupted run from its last
    # checkpoint; checkpoints made with other settings are never continued (--force starts over)
    resume_from = None if cfg.force else rundir.last_checkpoint(ckpt_dir)
    if resume_from is not None:
        check_checkpoints(ckpt_dir, fp, processes)
        resume_from = good_checkpoint(ckpt_dir)
        log.info("continuing the interrupted run from %s", resume_from)
    elif cfg.resume:
        raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir} to continue from; "
                                "run without --resume to start training")
    distributed.barrier()  # every process has read the run directory before the main one changes it
    if main:
        rundir.stage_marker(out, "train").unlink(missing_ok=True)
    # report_to, run_name; trackers report from the main process only
    report = (tracking.trainer_args(cfg.report_to, out, resume=resume_from is not None) if main
              else {"report_to": "none"})

    # ---- data: the data stage's splits, tokenized under the truncation policy (sft_data)
    train_rows = rundir.read_split(out, "train")
    val_rows = rundir.read_split(out, "validation")
    if cfg.drop_flagged or cfg.drop_flags:
        n, wanted = len(train_rows), set(cfg.drop_flags)
        train_rows = [r for r in train_rows
                      if not any(not wanted or f["flag"] in wanted for f in r.get(FLAGS_FIELD) or [])]
        log.info("dropping flagged rows (%s): %d of %d train rows kept",
                 ", ".join(sorted(wanted)) or "any flag", len(train_rows), n)
    if cfg.quantization != "none":  # fail before loading anything
        err = models.bitsandbytes_error(cfg.quantization)
        if err:
            raise RuntimeError(err)
    with distributed.main_first():  # the embedded model is converted once, by the main process
        tokenizer = models.load_tokenizer(cfg.model, padding_side="right",
                                          trust_remote_code=cfg.trust_remote_code)
    weights = flag_weight_map(cfg.flag_weights)  # {} unless flag_weights is set: no weights in the batches
    train_set = encode_records(train_rows, tokenizer, cfg.max_length, cfg.prompt_format, cfg.loss_on, "train",
                               loss_weight=(lambda r: flag_weights.row_weight(r, weights)) if weights else None)
    val_set = (encode_records(val_rows, tokenizer, cfg.max_length, cfg.prompt_format, cfg.loss_on,
                              "validation") if val_rows else None)
    rows_per_step = cfg.batch_size * cfg.grad_accum
    batch_size, grad_accum = process_batch(cfg.batch_size, cfg.grad_accum, processes)
    if len(train_set.examples) < rows_per_step:
        raise ValueError(
            f"the training split has {len(train_set.examples)} usable row(s), but one optimizer step "
            f"takes batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} = {rows_per_step} rows: "
            "lower --batch-size / --grad-accum, or use more data")
    if val_set is None and cfg.select_checkpoint != "last":
        raise ValueError(f"select_checkpoint {cfg.select_checkpoint} chooses by the validation split, but "
                         f"{rundir.split_path(out, 'validation')} has no rows: give the data stage a --val-size, "
                         "or use select_checkpoint last")
    if val_set is None:
        log.warning("no validation rows: training without validation loss")
    weighted = _report_weights(weights, train_set.examples)
    log.info("train: %d examples, %d tokens (%d with loss), %d letters cut at max_length=%d",
             len(train_set.examples), train_set.tokens, train_set.loss_tokens, len(train_set.truncated),
             cfg.max_length)

    # ---- how the model is computed: dtype, padding-free batches, attention
    dtype = models.compute_dtype(cfg.compute_dtype)
    if dtype == torch.float16 and not models.has_cuda():
        raise ValueError("fp16 mixed precision needs a CUDA GPU; on the CPU use --compute-dtype bf16 or fp32")
    base_ref = models.resolve_model(cfg.model)
    packed = padding_free.resolve(cfg.padding_free, cfg.attn_implementation, cfg.torch_compile)
    # packed rows need attention that stops at each example's end: ours by default; transformers' own
    # implementations (flash, sdpa, eager) handle them too when asked for by name
    attn = padding_free.register() if packed and cfg.attn_implementation == "auto" else cfg.attn_implementation

    # ---- the Trainer: validation loss and a checkpoint each epoch, a progress bar, a JSONL log
    on_gpu = models.has_cuda()
    fsdp = cfg.distributed == "fsdp"
    optim = optimizer_name(cfg.optimizer, fsdp)
    liger = use_liger(cfg.liger_kernel, cfg.torch_compile)
    if liger and weights:
        log.info("flag_weights computes the loss from the logits: Liger's fused cross-entropy, which never "
                 "builds them, is not used (its other kernels are)")
    eval_strategy = cfg.eval_strategy if val_set is not None else "no"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # a float in [0, 1): a share of all steps
        weight_decay=cfg.weight_decay,
        optim=optim,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # under FSDP its own activation checkpointing (fsdp_args), not the Trainer's
        **checkpointing_args(cfg.gradient_checkpointing and not fsdp),
        **(fsdp_args(cfg) if fsdp else {}),
        # every LoRA weight is used in every step: DDP need not search the graph for unused ones
        **({"ddp_find_unused_parameters": False} if processes > 1 and not fsdp else {}),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        use_liger_kernel=liger,
        neftune_noise_alpha=cfg.neftune_noise_alpha or None,
        torch_compile=cfg.torch_compile,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps or cfg.save_steps,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        prediction_loss_only=True,
        label_names=["labels"],
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=on_gpu,
        use_cpu=not on_gpu,
        **report,
        disable_tqdm=not is_terminal(),  # in a log: JsonlLogger's line per logging step instead of a bar
    )
    # ---- base model, quantized or not, and the LoRA adapter on top (after TrainingArguments, which
    # tells transformers' loading about FSDP)
    set_seed(cfg.seed)  # LoRA's initialisation happens here, before the Trainer seeds again
    model = models.load_model(cfg.model, cfg.quantization, cfg.compute_dtype, tokenizer=tokenizer,
                              attn_implementation=attn, trust_remote_code=cfg.trust_remote_code,
                              device="fsdp" if fsdp else None)
    model = add_lora(model, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA r=%d on %s: %s trainable of %s parameters (%.3f%%)", cfg.lora_r, cfg.target_modules,
             f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    if not on_gpu and processes == 1:  # a micro-batch that fits this machine, the global batch kept (train_fit)
        from covertune.training import train_fit

        plan = train_fit.plan_cpu(model, batch_size, grad_accum, max(len(e["input_ids"]) for e in train_set.examples),
                                  train_set.tokens, cfg.epochs, cfg.gradient_checkpointing)
        batch_size, grad_accum = plan.micro_batch, plan.grad_accum
        args.per_device_train_batch_size, args.gradient_accumulation_steps = batch_size, grad_accum

    if main:
        if resume_from is None:  # a fresh run: the old run's checkpoints and log go
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            log_path.unlink(missing_ok=True)
        else:  # steps after the checkpoint are done again: their log lines go
            trim_log(log_path, checkpoint_step(resume_from))
        io.write_json(ckpt_dir / CHECKPOINTS_FINGERPRINT, {**fp, "processes": processes})
    distributed.barrier()
    logger = JsonlLogger(log_path, log_lines=not is_terminal())  # written by the main process
    memory = MemoryCallback()
    # every checkpoint's record (its letters scored with rouge_l/task), the chosen one kept, early stopping;
    # the main process keeps the records and scores, and tells the others what it chose
    chooser = checkpoint_choice.CheckpointChooser(cfg, out, {**to_dict(cfg), "base_model": base_ref,
                                                             "base_model_name": cfg.model})
    if main:
        chooser.reconcile(checkpoint_step(resume_from) if resume_from else None)
    distributed.barrier()
    trainer = GlobalBatchTrainer(
        model=model,
        args=args,
        train_dataset=train_set.examples,
        eval_dataset=val_set.examples if val_set is not None else None,
        data_collator=(padding_free.collator() if packed else
                       PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if on_gpu else None)),
        processing_class=tokenizer,
        callbacks=[logger, memory] + ([checkpoint_choice.SharedChoice(chooser)] if cfg.save_strategy != "no"
                                      else []),
    )
    if not is_terminal():  # JsonlLogger writes the log lines; the Trainer's printer would repeat them
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    if resume_from:
        log.info("resuming from %s", resume_from)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    history = trainer.state.log_history
    if eval_strategy != "no" and not any(h.get("step") == trainer.state.global_step and "eval_loss" in h
                                       for h in history):
        trainer.evaluate()  # the final adapter's validation loss, when the last step had none
    history = trainer.state.log_history
    chosen_dir, selection = chooser.final_choice(trainer.state.global_step)  # the main process's records count
    if cfg.select_checkpoint != "last":
        log.info("adapter: checkpoint-%d by %s", selection["step"], selection["reason"])

    # ---- results and speed
    peak = ({"peak_gpu_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
             "peak_gpu_memory_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
            if on_gpu else {})
    if processes > 1:  # every process's memory: with FSDP each holds a share of the model
        peak["per_process"] = distributed.gather({"rank": distributed.rank(), **peak, **memory.figures()})
    elif on_gpu:
        peak.update(memory.figures())
    train_losses = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    tokens_per_s = logger.tokens / logger.seconds if logger.seconds else None
    info = {
        **to_dict(cfg),
        "base_model": base_ref,
        "base_model_name": cfg.model,
        "global_step": trainer.state.global_step,
        "epochs_done": trainer.state.epoch,
        "train_loss": train_losses[-1]["loss"] if train_losses else None,
        "train_loss_mean": result.training_loss,
        "eval_loss": (selection["eval_loss"] if chosen_dir is not None else
                      evals[-1]["eval_loss"] if evals else None),  # the adapter's
        "eval_loss_per_epoch": [{"epoch": h.get("epoch"), "step": h.get("step"), "eval_loss": h["eval_loss"]}
                                for h in evals],
        "checkpoint_selection": selection,
        "data": {"train_rows": len(train_set.examples), "validation_rows": len(val_set.examples) if val_set else 0,
                 "train_tokens": train_set.tokens, "train_loss_tokens": train_set.loss_tokens,
                 "train_letters_truncated": len(train_set.truncated),
                 "skipped_prompt_too_long": [rid for rid, _ in train_set.skipped],
                 "skipped_empty_letter": train_set.empty,
                 **({"flag_weights": weights, "train_rows_weighted_below_1": weighted} if weights else {})},
        "speed": {"tokens_per_s": tokens_per_s, "tokens": logger.tokens, "train_seconds": logger.seconds,
                  "device": torch.cuda.get_device_name(0) if on_gpu else "cpu", **peak,
                  "note": "non-padding tokens (prompt and letter) per second of optimizer steps, this session"},
        "trainable_parameters": trainable,
        "processes": processes,
        "distributed_resolved": ("fsdp" if fsdp else "ddp") if processes > 1 else "none",
        "batch": {"per_process_batch_size": batch_size, "per_process_grad_accum": grad_accum,
                  "processes": processes, "global_batch": batch_size * grad_accum * processes,
                  "asked_for": cfg.batch_size * cfg.grad_accum},
        "optimizer_resolved": optim,
        "liger_kernel_resolved": liger,
        "padding_free_resolved": packed,
        "compute_dtype_resolved": str(dtype).replace("torch.", ""),
        "versions": versions(),
    }
    log.info("trained %d steps: %s non-pad tokens in %.1f s = %s tokens/s", trainer.state.global_step,
             f"{logger.tokens:,}", logger.seconds, f"{tokens_per_s:,.0f}" if tokens_per_s else "n/a")

    # ---- outputs: the adapter folder appears whole (written beside it, then renamed), by the main process
    staging = out / ".adapter-fsdp"
    if fsdp:  # the adapter's shards gathered into whole tensors: every process takes part
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(staging))
        distributed.barrier()
    if not main:
        distributed.barrier()  # until the main process has written the outputs
        return f"train: process {distributed.rank()} of {processes} done; the main process wrote {adapter_dir}"
    with io.atomic_dir(adapter_dir) as tmp:
        if fsdp:
            for f in staging.iterdir():
                if f.is_file() and (f.name.startswith("adapter_") or f.name == "README.md"):
                    shutil.copyfile(f, tmp / f.name)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        if chosen_dir is not None:  # an earlier checkpoint than the final step was chosen
            checkpoint_choice.copy_adapter(chosen_dir, tmp)
        tokenizer.save_pretrained(tmp)
        io.write_json(tmp / rundir.TRAIN_INFO, info)
        io.write_text(tmp / "README.md", adapter_card(cfg, info))
    plot_loss(history, plot_path, checkpoint_choice.curve(chooser.records), selection["step"])
    rundir.mark_done(out, "train", {"adapter": str(adapter_dir), "global_step": trainer.state.global_step,
                                    "eval_loss": info["eval_loss"], "train_loss": info["train_loss"],
                                    "adapter_step": selection["step"], "select_checkpoint": cfg.select_checkpoint,
                                    "fingerprint": fp})
    distributed.barrier()  # the other processes end once the outputs are written
    chosen = (f"; adapter: checkpoint-{selection['step']} ({selection['reason']})"
              if cfg.select_checkpoint != "last" else "")
    return (f"train: wrote {adapter_dir} (adapter, tokenizer, model card, {rundir.TRAIN_INFO}), {log_path}, "
            f"{plot_path}; {trainer.state.global_step} steps, train loss {_fmt(info['train_loss'])}, "
            f"validation loss {_fmt(info['eval_loss'])}, "
            f"{_fmt(tokens_per_s, '{:,.0f}')} tokens/s{chosen}"
            + (f" ({processes} processes, {info['distributed_resolved']}, global batch "
               f"{info['batch']['global_batch']})" if processes > 1 else ""))


# ------------------------------------------------------------------------------ components


def check_config(cfg: TrainConfig) -> None:
    """Every option valid (config.validate), and what this machine must have for it."""
    validate(cfg)
    if cfg.distributed == "fsdp":
        if not models.has_cuda():
            raise ValueError("--distributed fsdp shards the model across CUDA GPUs and there is none here; "
                             "use --distributed ddp (the default), which also runs on the CPU")
        if distributed.world_size() < 2:
            raise ValueError("--distributed fsdp shards the model across several processes, and this is the "
                             "only one: launch with --num-gpus N (N >= 2), torchrun --nproc-per-node N or "
                             "accelerate launch --num-processes N")
    if cfg.liger_kernel == "on":
        if not models.has_cuda():
            raise ValueError("--liger-kernel on runs Triton kernels on a CUDA GPU; use auto or off on the CPU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise ValueError("--liger-kernel on needs the liger-kernel package: `pip install liger-kernel`, "
                             "or use auto/off")


def _report_weights(weights: dict[str, float], examples: list[dict]) -> int:
    """Log how many train rows flag_weights weighs below 1 (and at 0); refuse a split whose rows all weigh 0.
    Returns the count below 1."""
    if not weights:
        return 0
    below = sum(1 for e in examples if e[LOSS_WEIGHT] < 1)
    zero = sum(1 for e in examples if e[LOSS_WEIGHT] == 0)
    log.info("flag weights (%s): %d of %d train rows weighted below 1, %d of them at 0",
             ", ".join(f"{k}={v:g}" for k, v in weights.items()), below, len(examples), zero)
    if zero == len(examples):
        raise ValueError("flag_weights weighs every train row 0, which leaves nothing to learn: give the flags "
                         "these rows carry a weight above 0")
    return below


def _fmt(x, spec: str = "{:.4f}") -> str:
    return "n/a" if x is None else spec.format(x)
