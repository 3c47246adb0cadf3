# Eschaton: the two newcomer commands are `make demo` and `make test`.
# Both work as root on a fresh Debian 12 machine: they install apt packages and the venv themselves.

PYTHON  ?= /usr/bin/python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
APT_PKGS := python3-venv python3-dev build-essential socat nftables iproute2 procps \
            systemd util-linux electrum \
            debootstrap qemu-user-static binfmt-support qemu-system-arm ipxe-qemu qemu-utils dosfstools mtools fdisk e2fsprogs openssh-client \
            chromium chromium-driver
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: setup demo test test-unit lint typecheck bench clean image

setup: $(STAMP_PIP)

$(STAMP_APT):
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing apt packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "not root or no apt-get: assuming system packages are present ($(APT_PKGS))"; fi
	@touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/eschaton demo

lint: setup
	$(VENV)/bin/ruff check firmware hw meter_drivers tests bench
	$(VENV)/bin/mypy firmware/eschaton/core

# mypy --strict (pyproject.toml) on everything that ships: the firmware, hw and the meter drivers.
typecheck: setup
	$(VENV)/bin/mypy firmware/eschaton hw meter_drivers

test: lint
	$(VENV)/bin/python -m pytest -q -ra

# The unit tier (docs/testing.md): pure cores and in-process tests, no root, no nodes; under a minute.
test-unit: setup
	$(VENV)/bin/python -m pytest -q -ra tests/unit

# The flashable arm64 SD image (docs/image.md); as root, about 10 minutes.
image: setup
	image/build.sh build/eschaton-arm64.img

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
