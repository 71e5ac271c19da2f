"""The Trainer's parts: LoRA on the base, optimizer and kernel choices, the per-process batch, FSDP and
checkpointing arguments, and the checkpoints a resumed run may continue from.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
from pathlib import Path
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from covertune.config.stages import TrainConfig
from covertune.core import distributed, rundir
from covertune.models import load as models
from covertune.training import checkpoint_choice, flag_weights
from covertune.training.sft_data import LOSS_WEIGHT

log = logging.getLogger(__name__)

# How long to train: an interrupted run may be continued with another length.
DURATION = ("epochs", "max_steps")

CHECKPOINTS_FINGERPRINT = "covertune_fingerprint.json"  # beside the checkpoint-<step> folders


def check_checkpoints(ckpt_dir: Path, fp: dict, processes: int = 1) -> None:
    """Refuse to continue checkpoints made from other settings or data (their length may differ), or by
    another number of processes (each process's share of the data, and of FSDP's shards, would differ)."""
    path = ckpt_dir / CHECKPOINTS_FINGERPRINT
    if not path.exists():
        return  # written before checkpoints recorded their settings
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    before = recorded.get("processes", 1)
    if before != processes:
        raise rundir.StaleStage(f"{ckpt_dir} holds checkpoints written by {before} process(es) and this run has "
                                f"{processes}: continue with {before} (--num-gpus {before}, or torchrun "
                                f"--nproc-per-node {before}), or pass --force to start over (deletes them)")
    changes = rundir.fingerprint_changes(recorded, fp, ignore=DURATION + checkpoint_choice.OPTIONS)
    if changes:
        raise rundir.StaleStage(f"{ckpt_dir} holds checkpoints of an unfinished run with other settings or "
                                f"inputs ({'; '.join(changes)}); pass --force to start over (deletes them)")


def good_checkpoint(ckpt_dir: Path) -> Path:
    """The last checkpoint that can be continued from; later, unreadable ones (a save cut off) are
    removed, saying so, as the continued run writes those steps again."""
    good = rundir.last_good_checkpoint(ckpt_dir)
    if good is None:
        raise ValueError(f"no checkpoint in {ckpt_dir} can be continued from (each is unreadable: see the "
                         "warnings above); pass --force to start over (deletes them)")
    distributed.barrier()  # every process has chosen before the main one removes the later ones
    if not distributed.is_main():
        return good
    for path in rundir.checkpoints(ckpt_dir):
        if checkpoint_step(path) > checkpoint_step(good):
            log.warning("continuing from %s, the last readable checkpoint; removing %s", good.name, path)
            shutil.rmtree(path)
    return good


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def add_lora(model, cfg: TrainConfig):
    """The LoRA adapter of ``cfg`` on a frozen base. With a 4/8-bit base and ``fp32_upcast``, peft's
    prepare_model_for_kbit_training first casts norms, embeddings and LM head to fp32; otherwise they stay
    in the compute dtype (less memory, faster, and what the fused Liger kernels expect)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantization != "none" and cfg.fp32_upcast:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # the Trainer does it
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    targets = cfg.target_modules
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules="all-linear" if targets == ["all-linear"] else list(targets),
                      task_type="CAUSAL_LM", use_dora=cfg.use_dora, use_rslora=cfg.use_rslora)
    return get_peft_model(model, lora)


def use_liger(setting: str, torch_compile: bool = False) -> bool:
    """on: yes (check_config made sure it can run); auto: where a CUDA GPU and liger-kernel are, and
    not under torch.compile (the two together stopped with an illegal memory access on an H100:
    docs/PERFORMANCE.md)."""
    if setting == "auto":
        return (models.has_cuda() and importlib.util.find_spec("liger_kernel") is not None
                and not torch_compile)
    if setting == "on" and torch_compile:
        log.warning("--liger-kernel on with --torch-compile: this pair stopped with a CUDA illegal memory "
                    "access on an H100 (torch 2.11, liger-kernel 0.8.5); use --liger-kernel auto if it does")
    return setting == "on"


def optimizer_name(name: str, fsdp: bool = False) -> str:
    """auto: paged AdamW 32-bit (bitsandbytes) on a GPU, AdamW (torch) on the CPU and under FSDP (whose
    sharded optimizer state peft documents with torch's optimizers). Paged optimizers page GPU memory
    and need CUDA; asked for on the CPU they fall back to adamw_torch."""
    cuda_bnb = models.has_cuda() and models.bitsandbytes_error("nf4") is None
    if name == "auto":
        return "paged_adamw_32bit" if cuda_bnb and not fsdp else "adamw_torch"
    if name.startswith("paged_") and not cuda_bnb:
        log.warning("optimizer %s needs CUDA and bitsandbytes; using adamw_torch", name)
        return "adamw_torch"
    return name


def process_batch(batch_size: int, grad_accum: int, processes: int) -> tuple[int, int]:
    """(micro-batch, accumulation steps) of each process, so that the global batch (micro-batch x
    accumulation x processes) stays the ``batch_size x grad_accum`` asked for: the accumulation steps
    are divided among the processes when they divide evenly, else the micro-batch; when neither does,
    both are kept and the global batch grows ``processes``-fold (a warning says so)."""
    if processes <= 1:
        return batch_size, grad_accum
    if grad_accum % processes == 0:
        return batch_size, grad_accum // processes
    if batch_size % processes == 0:
        return batch_size // processes, grad_accum
    log.warning("batch_size %d x grad_accum %d cannot be shared by %d processes: each process takes %d x %d, "
                "so one optimizer step sees %d rows instead of %d; for the same global batch make "
                "grad_accum or batch_size a multiple of %d", batch_size, grad_accum, processes, batch_size,
                grad_accum, batch_size * grad_accum * processes, batch_size * grad_accum, processes)
    return batch_size, grad_accum


def fsdp_args(cfg: TrainConfig) -> dict:
    """TrainingArguments for FSDP-QLoRA as transformers, peft and bitsandbytes document it: FSDP1 full
    sharding, each decoder layer its own unit (the model's no-split modules; the Trainer wraps the LoRA
    layers apart from the frozen ones), original parameters kept, module states synchronised from the main
    process, low-CPU-memory loading, FSDP's own activation checkpointing, sharded checkpoints. The 4-bit
    weights are stored in the compute dtype (``models.quantization_config``), which FSDP can shard."""
    return {"fsdp": True, "fsdp_config": {
        "version": 1, "reshard_after_forward": "full_shard", "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "backward_prefetch": "BACKWARD_PRE", "forward_prefetch": False, "use_orig_params": True,
        "sync_module_states": True, "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": cfg.gradient_checkpointing}}


class GlobalBatchTrainer(Trainer):
    """The Trainer, with batches grouped by length over the global batch (rows per optimizer step, all
    processes together) rather than over one process's rows: N processes then see the rows one process
    would, step by step (the Trainer hands each process its share of every step's rows in turn).

    A batch that carries row weights (``loss_weight``: train's flag_weights) gets the weighted token-mean
    loss of covertune.training.flag_weights; any other batch the Trainer's own loss, unchanged."""

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches of one optimizer step and their label-token count; with row weights,
        the weighted count instead (sum_i w_i * n_i over the step's micro-batches, summed across processes
        wherever the Trainer sums its count), which compute_loss divides by."""
        batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
        if count is None or not batches or LOSS_WEIGHT not in batches[0]:
            return batches, count
        weighted = sum(flag_weights.weighted_tokens(b["labels"], b[LOSS_WEIGHT]) for b in batches)
        weighted = weighted.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            weighted = self.accelerator.gather(weighted).sum()
        return batches, weighted

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """With row weights: the model's logits (its own loss not asked for), then the weighted token-mean
        cross-entropy, over the step's weighted count when the Trainer counts one (and scaled by the number
        of processes where it sums that count across them, as the Trainer's loss is, since DDP averages the
        gradients); otherwise the Trainer's compute_loss."""
        if LOSS_WEIGHT not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs = dict(inputs)
        weight, labels = inputs.pop(LOSS_WEIGHT), inputs.pop("labels")
        outputs = model(**inputs)
        if getattr(outputs, "logits", None) is None:
            raise ValueError("flag_weights computes the loss from the model's logits and this model returned none "
                             "(a fused loss kernel?): train with --liger-kernel off, or without --flag-weights")
        loss = flag_weights.weighted_loss(outputs.logits, labels, weight, num_items_in_batch)
        if (num_items_in_batch is not None and self.args.average_tokens_across_devices
                and self.args.world_size > 1):
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and self.args.world_size > 1:
            sampler.batch_size = (self.args.train_batch_size * self.args.gradient_accumulation_steps
                                  * self.args.world_size)
        return sampler


class MemoryCallback(TrainerCallback):
    """GPU memory of this process: the peak while loading and wrapping the model (up to the first step),
    and the peak of the training steps after it."""

    def __init__(self):
        self.load_peak = self.train_peak = None

    def on_train_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            self.load_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            self.train_peak = torch.cuda.max_memory_allocated()

    def figures(self) -> dict:
        gib = {"load_peak_gpu_memory_allocated_gib": self.load_peak,
               "train_peak_gpu_memory_allocated_gib": self.train_peak}
        return {k: round(v / 2**30, 2) for k, v in gib.items() if v is not None}


def checkpointing_args(enabled: bool) -> dict:
    """Activation (gradient) checkpointing without the reentrant autograd pass, under the argument
    name this transformers uses (``gradient_checkpointing`` until 5.17, ``activation_checkpointing``
    after)."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: enabled, f"{key}_kwargs": {"use_reentrant": False} if enabled else None}
