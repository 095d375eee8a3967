# Every target sets up what it needs from a fresh clone: a venv in .venv with the pinned set.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# One venv holds the engine, its tests and Airflow 3 (dags/, docker/local/).
EXTRAS  ?= dev,airflow

.PHONY: demo test lint unit bench clean airflow-up airflow-down airflow-run

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv
	# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise
	# compile pandas, SQLAlchemy, pyarrow... from source again (~2 s a start).
	$(BIN)/uv pip install --python $(BIN)/python -q --compile-bytecode -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/exchange demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# The layering (.importlinter): faces -> flow -> kind steps -> services -> connectors |
	# quality -> catalog -> kernel; no Airflow in the engine; no import cycle.
	$(BIN)/lint-imports --no-cache

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test: lint unit

# Whole `exchange run` processes against the raw floor, each target met or not (about
# 20 min; the source tables are built once and kept). BENCH_ARGS=--quick: 100k rows, one round.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .exchange .mypy_cache .ruff_cache

# A real distributed Airflow on this machine (PostgreSQL metadata DB, Redis broker): see
# docker/local/README.md and docs/airflow.md. airflow-run = up, trigger, check, down.
airflow-up: $(STAMP)
	docker/local/stack.sh up

airflow-down:
	docker/local/stack.sh down

airflow-run: $(STAMP)
	docker/local/stack.sh run
