#!/bin/sh
# Create the virtual environment on first use, then run the daemon or the test suite.
#   scripts/dev.sh run [bridged flags...]    serve bridge.yaml on the default socket
#   scripts/dev.sh test [pytest args...]     run the whole test suite
#   scripts/dev.sh setup                     only create or update .venv
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-from"

# llama-cpp-python compiles llama.cpp from source. A native build (-march=native) crashed
# during the first evaluation on some Xeon CPUs, so build portable code unless told otherwise.
: "${CMAKE_ARGS:=-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF}"
export CMAKE_ARGS

is_supported() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
    if [ -n "${PYTHON:-}" ]; then
        is_supported "$PYTHON" || { echo "PYTHON=$PYTHON is not Python 3.12 or newer" >&2; exit 1; }
        echo "$PYTHON"; return
    fi
    for candidate in python3.12 python3.13 python3.14 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && is_supported "$candidate"; then
            command -v "$candidate"; return
        fi
    done
    # pyenv shims for versions that are installed but not selected fail to run, so use the
    # interpreter files under the pyenv root directly.
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root)
        for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])\.[0-9]+$' | sort -V); do
            if is_supported "$root/versions/$version/bin/python3"; then
                echo "$root/versions/$version/bin/python3"; return
            fi
        done
    fi
    echo "Python 3.12 or newer was not found. Install it (for example: apt install python3.12-venv)," >&2
    echo "or run with PYTHON=/path/to/python3.12." >&2
    exit 1
}

setup() {
    fingerprint=$(cksum < "$ROOT/pyproject.toml")
    if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ]; then
        return
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        python=$(find_python)
        echo "Creating $VENV with $python" >&2
        "$python" -m venv "$VENV"
    fi
    echo "Installing sage-model-bridge and its dependencies (the first install compiles llama.cpp: a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
    echo "$fingerprint" > "$STAMP"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    setup) setup ;;
    run) setup; cd "$ROOT"; exec "$VENV/bin/bridged" --config "$ROOT/bridge.yaml" "$@" ;;
    test) setup; cd "$ROOT"; exec "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: scripts/dev.sh run|test|setup [arguments]" >&2; exit 2 ;;
esac
