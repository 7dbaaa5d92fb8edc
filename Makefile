# `make demo` and `make test` work on a fresh machine: they create .venv and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-out

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/ingest synth --config configs/ingest/demo-synth.yaml --out $(DEMO)/corpus/demo.h5ad
	$(BIN)/ingest build --config configs/ingest/demo.yaml --input '$(DEMO)/corpus/demo-*.h5ad' --out $(DEMO)/zarr --format zarr
	$(BIN)/ingest build --config configs/ingest/demo.yaml --input '$(DEMO)/corpus/demo-*.h5ad' --out $(DEMO)/wds --format webdataset
	$(BIN)/ingest verify $(DEMO)/zarr
	$(BIN)/ingest verify $(DEMO)/wds
	$(BIN)/ingest inspect $(DEMO)/zarr

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks ingest --cells 100000 --out benchmarks/results/latest

clean:
	rm -rf $(DEMO) .pytest_cache
