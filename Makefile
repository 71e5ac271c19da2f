.PHONY: install install-test demo test smol clean

# what the demo needs: covertune and the embedded models
install:
	bash scripts/install.sh

# what the tests add: the test extras, llama-cpp-python (built from its sdist once, ~5 min on 2 cores), Node, Chromium
install-test:
	bash scripts/install.sh test

# the main job on the embedded defaults: SmolLM2-135M-Instruct on the packaged sample, end to end
demo: install
	.venv/bin/covertune run --preset demo

# the Python tests (the browser extension's end-to-end test among them), then the extension's unit tests
test: install-test
	.venv/bin/python -m pytest -q
	node --test extension/tests/*.test.js

# the real experiment on the full dataset (GPU recommended; see docs/RESULTS.md)
smol: install
	.venv/bin/covertune run --preset smol --data ../shared/data/cover-letter-dataset

clean:
	rm -rf runs .pytest_cache
