# The two commands of the README:
#   make demo   set up .venv and run the main job (agents + demo jobs on the embedded SQLite default)
#   make test   set up .venv (and Debian's Chromium for the browser tests) and run the whole suite,
#               then the whole suite again on PostgreSQL + Redis (.ci/test-backends)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

# print_to_pdf: WeasyPrint's Pango and the fonts its CSS names (Latin, CJK, Arabic/Hebrew, colour emoji)
PRINT_DEPS := libpangoft2-1.0-0 fonts-dejavu-core fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji

demo: $(STAMP)
	bash .ci/system-deps $(PRINT_DEPS)
	$(BIN)/jobmanager --home $(or $(JOBMANAGER_HOME),demo-home) demo

test: $(STAMP)
	bash .ci/system-deps chromium poppler-utils $(PRINT_DEPS)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest
	bash .ci/test-backends $(BIN)/python   # again on PostgreSQL + Redis (as root: installs and starts them)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy   # [tool.mypy] in pyproject.toml: jobmanager/, widgets/ and scripts/

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-home .pytest_cache .mypy_cache
