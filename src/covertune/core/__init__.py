"""Foundations every other package stands on, importing nothing above them (config.options at most):
the record fields, the prompt (render and parse), data limits, the run directory, file io, progress
lines, the multi-process helpers and package versions."""

__all__ = ["records", "prompt", "limits", "rundir", "io", "progress", "distributed", "versions"]
