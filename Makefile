# The two commands of the README: `make demo` (pretrain on Fashion-MNIST on the CPU, then compare
# with the baselines) and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: demo test install data clean-demo

$(BIN)/simsiam: pyproject.toml requirements.txt requirements-extras.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -r requirements-extras.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(BIN)/simsiam

# Fashion-MNIST from Debian where apt is usable; otherwise the demo falls back to `digits`.
data:
	@scripts/get_fmnist.sh

# The run's last line is its kNN accuracy beside the baselines; run again, it resumes or says them again.
demo: install data
	@preset=$$(scripts/get_fmnist.sh --preset); \
	if [ -f $(DEMO_DIR)/checkpoint.pt ]; then \
	  $(BIN)/simsiam pretrain --resume $(DEMO_DIR) --quiet; \
	else \
	  $(BIN)/simsiam pretrain --preset $$preset --out-dir $(DEMO_DIR) --quiet; \
	fi

# The 15 slowest tests close every run, so that the suite's cost stays in view (CI runs this target).
# One test process: two (pytest-xdist) measured no faster beside another busy process (188 s both).
test: install
	$(BIN)/python -m pytest -q --durations=15

clean-demo:
	rm -rf $(DEMO_DIR)
