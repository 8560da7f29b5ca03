# atm_repro: the two entry points of the README, plus the stages.
PROFILE ?= cpu
PY ?= python3

.PHONY: setup reproduce test test-fast

setup:            ## install the package, its pinned CPU torch and the test tools
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"

reproduce: setup  ## the main job: every notebook of PROFILE (default cpu) with papermill
	$(PY) -m atm_repro.cli run --profile $(PROFILE)

test: setup       ## the test suite (what CI runs)
	$(PY) -m pytest -q

test-fast:        ## without the tests marked slow
	$(PY) -m pytest -q -m "not slow"
