"""covertune: QLoRA fine-tuning for grounded cover letters, with evaluation and reports."""

__version__ = "0.1.0"
