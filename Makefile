# The README's two commands are `make demo` and `make test`. Each installs what it needs
# (virtual environment, pip and npm packages, Debian packages when run as root) and then runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export VGSME_HOME ?= $(CURDIR)/workspace
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian packages: speech synthesis for the demo corpus (MBROLA needs contrib + non-free),
# and the browser the report test opens its HTML page in.
DEMO_DEBS := espeak-ng sox mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
	mbrola-fr1 mbrola-fr2 mbrola-fr3 mbrola-fr4 mbrola-fr5 mbrola-fr6 mbrola-fr7 \
	mbrola-nl2 mbrola-nl3
TEST_DEBS := chromium

# The demo's lighter configuration (docs/training.md, "The demo configuration", says why).
DEMO_SEEDS ?= 0-1
DEMO_TRAIN_OPTS ?= --width 128 --epochs 20 --logit-mode cap --lr 2e-3
# The exposure demo: EN+FR at three language ratios, every epoch's weights kept (docs/analyses.md, "Learning
# trajectories"), under the matched budget (as many anchors per epoch as a monolingual English run).
DEMO_EXPOSURE_RATIOS ?= 75:25 50:50 25:75
# The encoder-layer ablation: English heads on each of Whisper-base's 7 hidden states (0 = input embeddings,
# 6 = the final output), and on their learned softmax-weighted sum (docs/training.md, "Encoder layers").
DEMO_LAYERS ?= 0..6 weighted

.PHONY: demo demo-exposure demo-layers test venv system-deps test-system-deps npm-deps bench gpu-check clean help readme-results

help:
	@echo "make demo   build the demo corpus, extract features, train, analyse, report"
	@echo "make demo-exposure  the demo corpus, an EN+FR language-ratio study with learning trajectories"
	@echo "make demo-layers  the demo corpus, English heads on each Whisper-base encoder layer and their weighted sum"
	@echo "make test   run the test suite"
	@echo "make bench  run the speed benchmarks under bench/"
	@echo "make gpu-check  the GPU check in one call (<= 5 min on one GPU; docs/gpu.md)"

venv: $(VENV)/.installed

# torch is installed first and pinned, so that no later requirement can pull another build.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[demo,test]' torch==2.13.0
	touch $@

system-deps:
	@DEBS="$(DEMO_DEBS)" bash .ci/debian-packages.sh

test-system-deps:
	@DEBS="$(DEMO_DEBS) $(TEST_DEBS)" bash .ci/debian-packages.sh

npm-deps: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: venv system-deps npm-deps
	time $(BIN)/vgsme-demo-corpus
	time $(BIN)/extract-features --corpus demo --all
	time $(BIN)/train-heads --corpus demo --configs en fr nl en+fr en+nl fr+nl --seeds $(DEMO_SEEDS) $(DEMO_TRAIN_OPTS) --study demo
	time $(BIN)/analyse all --study demo

demo-exposure: venv system-deps npm-deps
	time $(BIN)/vgsme-demo-corpus
	time $(BIN)/extract-features --corpus demo --all
	time $(BIN)/train-heads --corpus demo --langs en fr --ratio $(DEMO_EXPOSURE_RATIOS) --budget matched --seeds $(DEMO_SEEDS) \
		$(DEMO_TRAIN_OPTS) --save-epochs --study demo-exposure
	time $(BIN)/analyse all --study demo-exposure

# The English audio again with whisper-base-hf, every hidden state in one store; the images are those of `make demo`
# (reused when that store exists).
demo-layers: venv system-deps npm-deps
	time $(BIN)/vgsme-demo-corpus
	time $(BIN)/extract-features --corpus demo --lang en --encoder whisper-base-hf --layers all
	time $(BIN)/extract-features --corpus demo --modality image
	time $(BIN)/train-heads --corpus demo --langs en --audio-encoder whisper-base-hf --audio-layer $(DEMO_LAYERS) --seeds $(DEMO_SEEDS) \
		$(DEMO_TRAIN_OPTS) --study demo-layers
	time $(BIN)/analyse all --study demo-layers

# Copy the demo's Table 1 and figures next to the README (run after `make demo`, `make demo-exposure` and
# `make demo-layers`).
readme-results:
	mkdir -p docs/demo
	cp $(VGSME_HOME)/reports/demo/table1.md $(VGSME_HOME)/reports/demo/variance.png docs/demo/
	cp $(VGSME_HOME)/runs/demo/en+nl-w128-s0/analysis/pca.png docs/demo/pca.png
	cp $(VGSME_HOME)/reports/demo-exposure/exposure.png $(VGSME_HOME)/reports/demo-exposure/trajectory.png docs/demo/
	cp $(VGSME_HOME)/reports/demo-exposure/table1.md docs/demo/table1-exposure.md
	cp $(VGSME_HOME)/reports/demo-layers/layers.png $(VGSME_HOME)/reports/demo-layers/layers.md \
		$(VGSME_HOME)/reports/demo-layers/layer_weights.png docs/demo/

test: venv test-system-deps npm-deps
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/cache_read.py
	$(BIN)/python bench/train_step.py

# The GPU check (docs/gpu.md): CUDA extraction, a bf16 training sweep, bench/train_step.py --device cuda; figures
# printed with the GPU's name and written to bench/results/. GPU_CHECK_OPTS="--device cpu --smoke" on a CPU.
GPU_CHECK_OPTS ?=
gpu-check: venv
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_OPTS)

clean:
	rm -rf $(VENV) node_modules workspace
