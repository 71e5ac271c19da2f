"""Export a fine-tuned model for local runtimes: GGUF (llama.cpp, Ollama, LM Studio) with an Ollama
Modelfile, or a merged safetensors folder with a model card. The command is ``covertune.export.stage``."""

from covertune.export.stage import export

__all__ = ["export"]
