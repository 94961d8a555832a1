# DynTune: `make demo` runs the headline search, `make test` the whole suite; both set up .venv first.
PY := .venv/bin/python

.PHONY: setup demo smoke test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) search/run.py space=dbf $(ARGS)

smoke: setup
	$(PY) search/run.py space=dbf smoke=true $(ARGS)

test: setup
	$(PY) -m pytest -q -ra $(ARGS)

clean:
	rm -rf experiments .pytest_cache
