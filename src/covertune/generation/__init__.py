"""Generation: decoding primitives (decoding), how batches are decoded (engines), letters for many prompts
with a resume journal (letters), choosing among candidate letters (select), and SDPA attention without
key/value copies for compiled decoding (gqa_attention)."""

__all__ = ["decoding", "engines", "letters", "select", "gqa_attention"]
