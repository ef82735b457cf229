# `make serve` and `make test` each set up .venv on first use (see README).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install serve test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/baihua serve

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .
	@# mypy cannot follow the editable install's package-dir mapping: give it a baihua/ of links.
	mkdir -p build/mypy/baihua
	for p in app configs core encoder eval index whitening; do ln -sfn ../../../$$p build/mypy/baihua/$$p; done
	MYPYPATH=build/mypy $(VENV)/bin/python -m mypy -p baihua.core -p baihua.configs -p baihua.encoder -p baihua.whitening \
		-p baihua.index -p baihua.eval -p baihua.app
