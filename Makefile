# Quick start: `make demo` trains and evaluates a small SMOSE run; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SMOSE := $(VENV)/bin/smose
SUITES_VENV := .venv-suites
SUITES_PY := $(SUITES_VENV)/bin/python
DEMO_ENV ?= Hopper-v5
DEMO_STEPS ?= 20000
DEMO_DIR ?= runs/demo
# The suite's processes (pytest-xdist; `auto`: one per CPU core, 0: the suite in this process). Each takes whole test
# files, so that a file's shared fixtures (small real training runs) are built once per process that needs them.
TEST_WORKERS ?= auto

# Headless MuJoCo rendering (`smose video`, EGL) needs these Debian packages; `setup-render` installs them with apt-get
# when they are missing and we are root, and otherwise only warns (everything but `smose video` works without them).
RENDER_PKGS ?= libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri

.PHONY: setup setup-test setup-suites setup-render demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e ".[test]"
	touch $@

# The other suites (smose[suites]: DeepMind Control, Meta-World) run on MuJoCo 3.3.0, which Meta-World pins and
# neither runs without, while the Gymnasium MuJoCo tasks keep the MuJoCo of $(VENV), so that their numbers do not
# change. The suites' tests run in $(SUITES_VENV): a venv that sees $(VENV)'s packages (through a .pth file) and holds
# the suites and their MuJoCo in front of them (pip installs there and leaves $(VENV) as it is).
$(SUITES_VENV)/.installed: $(VENV)/.installed-test
	$(PYTHON) -m venv $(SUITES_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> "$$($(SUITES_PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/smose-base-venv.pth"
	$(SUITES_PY) -m pip install --quiet -e ".[suites]"
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

setup-suites: $(SUITES_VENV)/.installed

setup-render:
	@if ! command -v dpkg >/dev/null 2>&1 || dpkg -s $(RENDER_PKGS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "setup-render: installing $(RENDER_PKGS)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RENDER_PKGS)) \
			|| echo "setup-render: apt-get failed; smose video may be unavailable"; \
	else echo "setup-render: missing $(RENDER_PKGS) and not root; smose video may be unavailable"; fi

demo: setup setup-render
	$(SMOSE) train --env $(DEMO_ENV) --steps $(DEMO_STEPS) --learning-starts 5000 --eval-every 5000 --out $(DEMO_DIR) --force
	$(SMOSE) eval $(DEMO_DIR) --episodes 10
	$(SMOSE) info $(DEMO_DIR)
	$(SMOSE) distill $(DEMO_DIR)
	$(SMOSE) explain $(DEMO_DIR)
	@echo "Report: $(DEMO_DIR)/report/index.html (open it in a browser; report.md beside it)."
	@echo "Video of one episode: $(SMOSE) video $(DEMO_DIR) --out $(DEMO_DIR)/episode.mp4"

# Everything in $(VENV) (the suites' tests skip there: no smose[suites]), then the suites' tests where they are
# installed; SMOSE_REQUIRE_SUITES makes them fail rather than skip if the suites do not import.
test: setup-test setup-suites setup-render
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests
	SMOSE_REQUIRE_SUITES=1 $(SUITES_PY) -m pytest -q tests/test_suites.py

clean:
	rm -rf $(VENV) $(SUITES_VENV) runs .pytest_cache
