# Both targets create .venv and install everything on first use (see scripts/dev.sh).
.PHONY: run test setup bench

run:  ## serve bridge.yaml on the default Unix socket
	@scripts/dev.sh run $(ARGS)

test:  ## run the whole test suite
	@scripts/dev.sh test $(ARGS)

setup:  ## only create or update .venv
	@scripts/dev.sh setup

bench:  ## run every benchmark scenario and rewrite docs/benchmarks.md (10 to 20 minutes)
	@scripts/dev.sh setup
	@.venv/bin/python -m pip install --quiet -e '.[test,bench]'
	@.venv/bin/python -m benchmarks.run_all $(ARGS)
