# The two commands a newcomer needs: `make quickstart` and `make test`.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines get the exact tested set (torch 2.13.0+cpu). GPU users: `make CONSTRAINTS= test`
# after installing the CUDA build of torch that matches their driver into .venv.
CONSTRAINTS ?= constraints-cpu.txt
PYTEST_ARGS ?=
# OpenCV build (a pyproject extra): headless, unless the GUI build is installed already, which is
# kept (`make gui` switches to it; pip would put the other beside it, and both provide cv2).
OPENCV ?= $(if $(wildcard $(VENV)/lib/python*/site-packages/opencv_python-*.dist-info),gui,headless)

.PHONY: install test lint quickstart clean gui

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[all,test,lint,$(OPENCV)]"
	@touch $@

# The camera window's OpenCV in place of the headless build (uninstalled first: same cv2 files).
gui: install
	$(BIN)/python -m pip uninstall -y opencv-python-headless
	$(BIN)/python -m pip install $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[all,test,lint,gui]"

# A few pytest processes, by area marker (`pytest -m training` runs one area; tests/run_groups.py
# says why, and what once crashed one long process). PYTEST_ARGS go to each.
test: install
	$(BIN)/python tests/run_groups.py -q $(PYTEST_ARGS)

# ruff and mypy over the package (train/, convert/ and apps/ are lafs_edge's subpackages), and
# the layer contract (import-linter; the contracts are in pyproject.toml).
lint: install
	$(BIN)/ruff check lafs_edge train convert apps
	$(BIN)/mypy
	$(BIN)/lint-imports

quickstart: install
	$(BIN)/python -m lafs_edge.apps.quickstart $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
