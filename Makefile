# promgres: the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
ARGS ?=
# The database `make run` uses when neither --db-uri (in ARGS) nor PROMGRES_DB_URI is given.
LOCAL_DB_URI := postgresql://postgres@127.0.0.1:5432/promgres

.PHONY: run build test lint fmt bench clean

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
	$(CARGO) test --all-targets

# The benchmark suite: prints a table of figures and ratios measured in one run and writes
# bench-results.json. Bounded to a few minutes; cleans up its databases. QUICK=1 for small sizes.
bench:
	scripts/ensure-postgres.sh
	$(CARGO) build --release --bins
	./target/release/promgres-bench --suite --json-out bench-results.json $(if $(QUICK),--quick,)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
