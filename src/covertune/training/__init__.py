"""Training components: the Trainer's parts (trainer), the SFT examples and collator (sft_data),
padding-free batches (padding_free), flags as loss weights (flag_weights), choosing the checkpoint by the
task (checkpoint_choice), experiment trackers (tracking) and the loss log and plot (train_log)."""

__all__ = ["trainer", "sft_data", "padding_free", "flag_weights", "checkpoint_choice", "tracking", "train_log"]
