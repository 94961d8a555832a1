# DynTune: `make demo` runs the headline search, `make test` the whole suite, `make test-fast` the unit tests
# (no Ray, no training: the edit loop); all set up .venv first.
PY := .venv/bin/python

.PHONY: setup demo smoke test test-fast bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) search/run.py space=dbf num_samples=3 data.num_train=150 data.num_val=50 'train.img_scale=[256,256]' $(ARGS)

smoke: setup
	$(PY) search/run.py space=dbf smoke=true $(ARGS)

test: setup
	$(PY) -m pytest -q -ra $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow" $(ARGS)

clean:
	rm -rf experiments .pytest_cache
