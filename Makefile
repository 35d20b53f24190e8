# The two entry points of README.md: `make demo` and `make test`.
PY ?= python3
APT_PACKAGES = openssh-server openssh-client kotlin

.PHONY: install system demo test
install:
	$(PY) -m pip install -q -e '.[test]'

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

demo: install
	edgeconv info mobilenet_v2

test: install system
	$(PY) -m pytest
