"""The letter-quality classifier: the labelling rule, its features and model, the classify command."""
