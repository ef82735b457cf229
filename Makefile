# `make serve` and `make test` each set up .venv on first use (see README).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install serve test lint screenshots browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The browser tests drive Debian's Chromium (they skip without it); CJK fonts for screenshots.
# Installed when root and missing; a failure here only leaves those tests skipped.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-wqy-microhei >/dev/null) \
		|| echo "could not install chromium: the browser tests will be skipped"; \
	fi

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/baihua serve

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest

# The playground's screenshots in docs/, taken by its browser tests on the real model.
screenshots: $(STAMP) browser
	BAIHUA_UI_SCREENSHOTS=docs $(VENV)/bin/python -m pytest tests/app/test_ui.py -k real_model

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .
	@# mypy cannot follow the editable install's package-dir mapping: give it a baihua/ of links.
	mkdir -p build/mypy/baihua
	for p in app cli configs core encoder eval index jobs serving whitening; do ln -sfn ../../../$$p build/mypy/baihua/$$p; done
	MYPYPATH=build/mypy $(VENV)/bin/python -m mypy -p baihua.core -p baihua.configs -p baihua.encoder -p baihua.whitening \
		-p baihua.index -p baihua.eval -p baihua.serving -p baihua.jobs \
		-p baihua.app -p baihua.cli
