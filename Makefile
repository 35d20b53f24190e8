# The two entry points of README.md: `make demo` and `make test`.
PY ?= python3
APT_PACKAGES = openssh-server openssh-client adb kotlin chromium chromium-driver

.PHONY: install system arm64 demo test
install:
	$(PY) -m pip install -q -e '.[test]'

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# The emulated arm64 device (qemu-aarch64 10 + an arm64 Python sysroot), cached in .cache/arm64.
arm64:
	bash bench_device/setup_arm64.sh --no-check

demo: install
	edgeconv run

test: install system arm64
	$(PY) -m pytest
