# Two commands on a fresh clone: `make demo` and `make test`. Both build .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
MODEL ?= tiny-gemma2

.PHONY: install demo test lint bench tiny-model tiny-model-gemma3 tiny-sae catalog clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gemma-scope demo --overwrite --model $(MODEL)

test: $(STAMP)
	$(VENV)/bin/ruff check gemma_scope_ext gemma_scope_cli.py tests tutorials benchmarks tools
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check gemma_scope_ext gemma_scope_cli.py tests tutorials benchmarks tools

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# Rebuild the embedded tiny Gemma 2 (minutes on CPU); its output is committed.
tiny-model: $(STAMP)
	$(PY) tools/make_tiny_gemma2.py

# Rebuild the embedded tiny Gemma 3 from the tiny Gemma 2's corpus and tokenizer; committed too.
tiny-model-gemma3: $(STAMP)
	$(PY) tools/make_tiny_gemma3.py

tiny-sae: $(STAMP)
	$(PY) tools/make_tiny_sae.py

# Regenerate the Gemma Scope catalog from SAELens's bundled pretrained_saes.yaml.
catalog: $(STAMP)
	$(PY) tools/make_catalog.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
