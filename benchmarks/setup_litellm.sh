#!/bin/sh
# Create LiteLLM's own virtual environment for the benchmark peer, apart from the project's .venv.
#   benchmarks/setup_litellm.sh                  install the newest litellm[proxy] from PyPI
#   LITELLM_SPEC='litellm[proxy]==1.108.7' benchmarks/setup_litellm.sh   install one version
# run_all.py uses this environment when it exists, or the one named by SAGE_BENCH_LITELLM_VENV.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
VENV="${SAGE_BENCH_LITELLM_VENV:-$HERE/.litellm-venv}"
SPEC="${LITELLM_SPEC:-litellm[proxy]}"
PYTHON="${PYTHON:-python3.12}"

if [ ! -x "$VENV/bin/python" ]; then
    # With pyenv, python3.12 runs only when 3.12 is selected; PYENV_VERSION selects it for this command.
    PYENV_VERSION="${PYENV_VERSION:-3.12.1}" "$PYTHON" -m venv "$VENV"
fi
# The install takes about 2 minutes on the 2-core benchmark machine; 15 minutes is the limit.
timeout 900 "$VENV/bin/pip" install --quiet "$SPEC"
"$VENV/bin/pip" show litellm | grep "^Version:"
echo "LiteLLM is installed in $VENV"
