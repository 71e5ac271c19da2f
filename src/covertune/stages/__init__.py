"""One module per command, each with one entry point taking its config (covertune.registry names them).
A stage imports components, never another stage; pipeline and sweep reach the stages through the registry."""

__all__ = ["data", "train", "prefer", "merge", "generate", "evaluate", "report", "write", "serve", "export",
           "classify", "compare", "sweep", "pipeline"]
