"""The letter-quality classifier: the labelling rule (labels), its features, the model and its folder
(model), fitting it and filtering train rows by it (fit). The command is ``covertune.stages.classify``."""

__all__ = ["labels", "features", "model", "fit"]
