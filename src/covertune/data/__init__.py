"""The data stage: load, validate, clean, flag and split a cover-letter dataset (``stage.run_data``)."""
