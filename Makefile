# The README's two commands: `make run` and `make test`. Each does all its own set-up on a fresh Debian machine.
SHELL := /bin/bash
PY := .venv/bin/python
CONF ?= conf/ukproxy.toml
APT_PACKAGES := python3-venv python3-dev gcc make xz-utils dpkg-dev qemu-system-x86 iproute2 curl \
                nginx libnginx-mod-stream wrk apache2-utils redis-tools redis-server haproxy etcd-server etcd-client \
                nghttp2-client openssl libssl-dev chromium-headless-shell

.PHONY: run test deps venv compiled unikernels lint bench clean

run: deps venv compiled unikernels
	$(PY) -m ukproxy run -c $(CONF)

test: deps venv compiled unikernels
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# apt packages: installed only when one is missing, so repeated runs stay fast and offline-friendly.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ $$(id -u) -ne 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# Debian enables nginx on install; the benches start their own, so keep the system one from holding port 80.
	@if command -v systemctl >/dev/null && systemctl is-active -q nginx 2>/dev/null; then systemctl stop nginx; systemctl disable -q nginx || true; fi

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[test,bench,compile]'
	touch $@

# The request path compiled by mypyc (setup.py), rebuilt in place whenever a source changes; the build
# records each compiled source's hash, and ukproxy/compiled.py loads the extensions only while all match.
compiled: .venv/.compiled
.venv/.compiled: .venv/.installed setup.py $(shell find ukproxy -name '*.py' -o -name '*.c')
	$(PY) setup.py -q build_ext --inplace
	touch $@

unikernels:
	$(MAKE) -C unikernels

lint: venv
	.venv/bin/ruff check .

bench: deps venv compiled unikernels
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf .venv build
	find ukproxy -name '*.so' -delete
	rm -f ukproxy/compiled_sources.sha256
	$(MAKE) -C unikernels clean
