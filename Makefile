# `make demo` and `make test` work on a fresh machine: they create .venv and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-out

.PHONY: install demo test lint bench bench-full clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/ingest synth --config configs/ingest/demo-synth.yaml --out $(DEMO)/corpus/demo.h5ad --census-out $(DEMO)/census
	$(BIN)/ingest build --config configs/ingest/demo.yaml --input '$(DEMO)/corpus/demo-*.h5ad' --out $(DEMO)/zarr --format zarr
	$(BIN)/ingest build --config configs/ingest/demo.yaml --input '$(DEMO)/corpus/demo-*.h5ad' --out $(DEMO)/wds --format webdataset
	$(BIN)/ingest verify $(DEMO)/zarr
	$(BIN)/ingest verify $(DEMO)/wds
	$(BIN)/ingest inspect $(DEMO)/zarr
	@echo "== the Census path, offline: the same corpus as a Census-shaped SOMA copy, primary cells only =="
	$(BIN)/ingest build --config configs/ingest/demo.yaml --census-version 2025-01-30 --census-uri $(DEMO)/census \
		--obs-filter "is_primary_data == True" --out $(DEMO)/census-zarr --format zarr
	$(BIN)/ingest verify $(DEMO)/census-zarr
	$(BIN)/python -m shards stream $(DEMO)/zarr --batch-size 64 --context-length 2048 --workers 2 --epochs 2
	$(BIN)/python -m shards stream $(DEMO)/wds --batch-size 64 --context-length 2048 --epochs 1
	@echo "== two organisms, built separately, mixed 60/40 in one token space (configs/train/mix-organisms.yaml) =="
	$(BIN)/ingest synth --cells 4000 --genes 6000 --datasets 3 --organism mus_musculus --seed 8 --out $(DEMO)/corpus/mouse.h5ad
	$(BIN)/ingest build --config configs/ingest/demo.yaml --input $(DEMO)/corpus/mouse.h5ad --out $(DEMO)/mouse-zarr --format zarr \
		--val-fraction 0.2
	$(BIN)/python -m training fit --config configs/train/mix-organisms.yaml --trainer.default_root_dir $(DEMO)/mix \
		--trainer.enable_progress_bar false
	@echo "== pretrain the demo recipe (configs/train/demo.yaml): its 400-step schedule stopped after 100 steps, then resumed to the end =="
	$(BIN)/python -m training fit --config configs/train/demo.yaml --data.path $(DEMO)/zarr \
		--trainer.default_root_dir $(DEMO)/train --trainer.max_steps 100 --model.scheduler.total_steps 400 \
		--trainer.enable_progress_bar false
	$(BIN)/python -m training fit --config configs/train/demo.yaml --data.path $(DEMO)/zarr \
		--trainer.default_root_dir $(DEMO)/train --trainer.enable_progress_bar false \
		--ckpt_path $(DEMO)/train/checkpoints/last.ckpt
	@echo "== the first 150 steps of the same schedule without the interruption: the resumed run must match them step for step =="
	$(BIN)/python -m training fit --config configs/train/demo.yaml --data.path $(DEMO)/zarr \
		--trainer.default_root_dir $(DEMO)/train-straight --trainer.max_steps 150 --model.scheduler.total_steps 400 \
		--trainer.enable_progress_bar false
	$(BIN)/python -m training embed --ckpt $(DEMO)/train/checkpoints/last.ckpt --data $(DEMO)/zarr --split val \
		--out $(DEMO)/train/val-cells.h5ad --quiet
	@echo "== the embedding against scanpy's standard PCA-50, all-genes PCA-50, an untrained encoder and scVI on held-out donors =="
	@echo "== (gate: above the untrained encoder and the frequency-only loss by their margins, on donor splits drawn after tuning) =="
	$(BIN)/python -m training report --run $(DEMO)/train --embeddings $(DEMO)/train/val-cells.h5ad \
		--reference $(DEMO)/train-straight --must-beat untrained frequency --split-seeds 2026 2027 2028 2029 2030 \
		> $(DEMO)/train/summary.txt || { cat $(DEMO)/train/summary.txt; echo "make demo: the pretrained model does not beat the untrained encoder and the frequency baseline"; exit 1; }
	@cat $(DEMO)/train/summary.txt
	@grep -q "bit for bit" $(DEMO)/train/summary.txt || { echo "make demo: the resumed run differs from the uninterrupted one"; exit 1; }

# two pytest workers, one test file each at a time: the suite is half subprocess start-up and waiting,
# and on 2 cores this takes it from ~20.5 to ~15 minutes (PYTEST_WORKERS=0 runs it in one process)
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

BENCH := benchmarks/results/latest

bench: $(STAMP)
	$(BIN)/python -m benchmarks run --suite quick --out $(BENCH)/quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks run --suite full --out $(BENCH)/full

clean:
	rm -rf $(DEMO) .pytest_cache
