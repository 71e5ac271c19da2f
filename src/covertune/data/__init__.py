"""Dataset components: load (any source), clean, flag quality problems, split and deduplicate, sample,
and the data report. The command is ``covertune.stages.data``."""

__all__ = ["load", "clean", "quality", "split", "sample", "report"]
