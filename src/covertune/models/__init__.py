"""Models: resolve and load a base model and its tokenizer (load), a fine-tuned model for writing letters
(letter_model), the one path from an adapter to merged weights (merge), and the model card (card)."""

__all__ = ["load", "letter_model", "merge", "card"]
