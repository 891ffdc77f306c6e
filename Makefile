# Both targets create .venv and install everything on first use (see scripts/dev.sh).
.PHONY: run test setup

run:  ## serve bridge.yaml on the default Unix socket
	@scripts/dev.sh run $(ARGS)

test:  ## run the whole test suite
	@scripts/dev.sh test $(ARGS)

setup:  ## only create or update .venv
	@scripts/dev.sh setup
