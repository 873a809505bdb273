# toolgym: `make demo` and `make test` work on a fresh clone (they create .venv and install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	command -v bwrap >/dev/null 2>&1 || apt-get install -y bubblewrap || echo "bubblewrap is missing and could not be installed: code environments will refuse to run"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m toolgym.demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
