# atm_repro: the README's two entry points (reproduce, test) and their parts.
PROFILE ?= cpu
PY ?= python3
NBVAL = --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout 1800
ENV = MPLBACKEND=agg TQDM_DISABLE=1  # for tests and nbval: no plots shown, no bars

.PHONY: setup latex data reproduce paper test test-fast refresh-notebooks

setup:              ## the package, its pinned CPU torch, the test tools, the probing data
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m atm_repro.probing_data

latex:              ## LaTeX for the paper, pdftotext for its tests (Debian; skipped when present)
	@command -v latexmk >/dev/null && command -v pdftotext >/dev/null || { apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends latexmk texlive-latex-base \
	  texlive-latex-recommended poppler-utils >/dev/null; }

reproduce: setup latex  ## the main job: notebooks 01-05 of PROFILE (papermill), then the PDF
	$(PY) -m atm_repro.cli run --profile $(PROFILE)
	$(MAKE) paper PROFILE=$(PROFILE)

paper:              ## paper/main.pdf from paper/tables (smoke: runs/smoke/paper/main.pdf)
	$(MAKE) -C paper $(if $(filter smoke,$(PROFILE)),smoke,pdf)

test: setup latex   ## what CI runs: import layers, unit tests, nbval over the notebooks (smoke), smoke paper
	lint-imports
	$(ENV) $(PY) -m pytest -q tests notebooks $(NBVAL)
	$(MAKE) -C paper smoke

test-fast:          ## import layers and unit tests without the slow ones (no setup, no notebooks)
	lint-imports
	$(ENV) $(PY) -m pytest -q tests -m "not slow"

refresh-notebooks:  ## re-run the notebooks on smoke; store their nbval reference outputs
	$(ENV) $(PY) -m atm_repro.cli refresh-notebooks
