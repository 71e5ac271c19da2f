.PHONY: install demo test smol clean

install:
	bash scripts/install.sh

# the main job on the embedded defaults: SmolLM2-135M-Instruct on the packaged sample, end to end
demo: install
	.venv/bin/covertune run --preset demo

test: install
	.venv/bin/python -m pytest -q

# the real experiment on the full dataset (GPU recommended; see docs/RESULTS.md)
smol: install
	.venv/bin/covertune run --preset smol --data ../shared/data/cover-letter-dataset

clean:
	rm -rf runs .pytest_cache
