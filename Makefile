# promgres: the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
ARGS ?=
# The database `make run` uses when neither --db-uri (in ARGS) nor PROMGRES_DB_URI is given.
LOCAL_DB_URI := postgresql://postgres@127.0.0.1:5432/promgres
# `promgres --version` prints it.
export PROMGRES_GIT_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# `make install`: where to, and the binary to install (the static build by default).
PREFIX ?= /usr/local
DESTDIR ?=
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := target/$(STATIC_TARGET)/release/promgres
BIN ?= $(STATIC_BIN)

.PHONY: run build test soak lint fmt bench clean static install fuzz

build:
	$(CARGO) build --release

# Builds, makes sure a PostgreSQL answers (starting or installing a local one when no
# database is configured), then runs promgres in the foreground.
run: build
	@if [ -z "$$PROMGRES_DB_URI" ] && ! grep -q -- '--db-uri' <<< "$(ARGS)"; then \
	  scripts/ensure-postgres.sh && \
	  { psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'promgres'" | grep -q 1 || \
	    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE promgres"; } && \
	  echo "promgres: using $(LOCAL_DB_URI)" && \
	  exec ./target/release/promgres --db-uri "$(LOCAL_DB_URI)" $(ARGS); \
	else \
	  exec ./target/release/promgres $(ARGS); \
	fi

# Starts what the tests need (a PostgreSQL on 127.0.0.1:5432, Debian's prometheus), then
# runs every test. Each test creates and drops its own database.
test:
	scripts/ensure-postgres.sh
	scripts/ensure-prometheus.sh
	scripts/ensure-chromium.sh
	$(CARGO) test --all-targets

# The long soak (about 12 minutes, production timeouts): two real Prometheus HA pairs, two
# promgres, a private PostgreSQL; a replica killed and restarted after more than a minute, a
# promgres and PostgreSQL restarted, every replica stopped longer than every timeout, twice.
# See tests/soak.rs. `make test` runs a 2-minute version of the same scenario.
soak:
	scripts/ensure-postgres.sh
	scripts/ensure-prometheus.sh
	PROMGRES_SOAK=full $(CARGO) test --release --test soak -- --nocapture

# The benchmark suite: prints a table of figures and ratios measured in one run and writes
# bench-results.json. Bounded to a few minutes; cleans up its databases. QUICK=1 for small sizes.
bench:
	scripts/ensure-postgres.sh
	scripts/ensure-prometheus.sh --bench
	$(CARGO) build --release --bins
	./target/release/promgres-bench --suite --json-out bench-results.json $(if $(QUICK),--quick,)

# Fuzzing (nightly toolchain; cargo-fuzz is installed when missing, and without a nightly it
# says so and does nothing): each target in fuzz/ under libFuzzer for FUZZ_SECONDS (60),
# seeded from ../shared/fixtures; prints executions and crashes, fails on a crash.
fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) scripts/fuzz.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# One statically linked x86_64 binary (glibc linked in): `ldd` reports it as static.
static:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --target $(STATIC_TARGET) --bin promgres
	@ldd $(STATIC_BIN) 2>&1 | grep -Eq 'not a dynamic executable|statically linked' || { echo "$(STATIC_BIN) is not static"; exit 1; }
	@echo "built $(STATIC_BIN): static"

# Installs the binary, the systemd unit and a default environment file (kept if present).
# `make install BIN=path` installs another build (the tests use the debug one).
install: $(if $(filter $(STATIC_BIN),$(BIN)),static,)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/promgres
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/bin/promgres|$(PREFIX)/bin/promgres|' scripts/promgres.service > $(DESTDIR)/etc/systemd/system/promgres.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/promgres.service
	@if [ -e $(DESTDIR)/etc/default/promgres ]; then echo "keeping $(DESTDIR)/etc/default/promgres"; \
	 else install -D -m 0640 scripts/promgres.env $(DESTDIR)/etc/default/promgres; fi
	@echo "installed; then: systemctl daemon-reload && systemctl enable --now promgres"

clean:
	$(CARGO) clean
