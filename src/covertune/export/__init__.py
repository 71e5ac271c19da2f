"""Export a fine-tuned model for local runtimes: GGUF (llama.cpp, Ollama, LM Studio) with an Ollama
Modelfile, or a merged safetensors folder with a model card. The command is ``covertune.stages.export``."""

__all__ = ["source", "gguf_llama", "gguf_vocab", "modelfile"]
