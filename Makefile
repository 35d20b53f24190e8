# The two entry points of README.md: `make demo` and `make test`.
# Everything goes into .venv (stock Debian's python3 refuses `pip install` outside one, PEP 668);
# the interpreter is Python 3.11: python3.11 where it exists, else python3.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV = .venv
APT_PACKAGES = openssh-server openssh-client adb kotlin chromium chromium-driver
# pytest-xdist workers of make test (each test file runs on one of them; see tests/conftest.py)
TEST_WORKERS ?= 2
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv install system arm64 demo test
# python3-venv (ensurepip) is a separate Debian package; installed when venv cannot work without it.
venv: $(VENV)/bin/python
$(VENV)/bin/python:
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "edgeconv needs Python 3.11: install python3.11 (Debian 12: apt-get install python3) or run make PY=/path/to/python3.11"; exit 1; }
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing python3-venv (Debian's venv support)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PY) -m venv $(VENV)

install: venv
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

# The emulated arm64 device (qemu-aarch64 10 + an arm64 Python sysroot), cached in .cache/arm64.
arm64: venv
	PYTHON=$(VENV)/bin/python bash bench_device/setup_arm64.sh --no-check

demo: install
	$(VENV)/bin/edgeconv run

test: install system arm64
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile
