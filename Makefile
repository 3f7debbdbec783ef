# The two commands README.md documents: `make run` (main job) and `make test` (test suite).
# Both create .venv and install the pinned dependencies on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp

.PHONY: venv run test bench

venv: $(STAMP)

# torch first, from the local 2.13.0 CPU wheel: otherwise pip resolves a CUDA build of several GB.
$(STAMP): requirements.txt setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# sim + planner + trainer with the shipped bundle for 60 s; prints and writes the run's summary.
run: venv
	$(BIN)/loop-ros up rc_car --duration 60 --json run_summary.json

test: venv
	$(BIN)/python -m pytest -q test

bench: venv
	$(BIN)/loop-ros bench plan --preset paper-halfcheetah --json bench/paper-halfcheetah.json
