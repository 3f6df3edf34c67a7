# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_EPOCHS ?= 20
DEMO_RUN ?= runs/demo

.PHONY: install demo test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf $(DEMO_RUN) $(DEMO_RUN).partial $(DEMO_RUN)-predictions
	$(VENV)/bin/unet-keras train --fold 0 --epochs $(DEMO_EPOCHS) --out $(DEMO_RUN)
	$(VENV)/bin/unet-keras evaluate --model $(DEMO_RUN) --fold 0
	$(PY) examples/demo_images.py $(DEMO_RUN)-inputs
	$(VENV)/bin/unet-keras predict $(DEMO_RUN)-inputs --model $(DEMO_RUN) --out $(DEMO_RUN)-predictions
	$(PY) examples/print_scores.py $(DEMO_RUN)

# Two workers, each test file on one (its module fixtures built once): 520 s -> 271 s on 2 cores.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

test-all: install
	$(PY) -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs .pytest_cache
