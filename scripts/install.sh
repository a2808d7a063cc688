#!/usr/bin/env bash
# Set up everything fscil-bench needs in a virtual environment (default: ./.venv).
#   bash scripts/install.sh            # core + Avalanche + learn2learn + test tools
#   FSCIL_CORE_ONLY=1 bash scripts/install.sh   # core only (torch, torchvision, numpy, pandas, ...)
#   bash scripts/install.sh --test     # also Debian's chromium (headless), for the HTML report test
# Safe to rerun: it skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
WITH_TEST_TOOLS=
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST_TOOLS=1 ;;
    *) echo "error: unknown option $arg (usage: bash scripts/install.sh [--test])" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# pip, minus the noise of index locations this machine's pip configuration may name but lack.
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}

# torch/torchvision: a bare requirement resolves to the releases available to this machine.
pip_install -e ".[test]"
"$VENV/bin/python" -c "import fscil_bench, torch, torchvision, pandas, tabulate, matplotlib"

if [ -z "${FSCIL_CORE_ONLY:-}" ]; then
  # Avalanche: the adapter for its strategies and benchmarks.
  if ! "$VENV/bin/python" -c "import avalanche" 2>/dev/null; then
    pip_install "avalanche-lib==0.6.0"
  fi
  # submitit: the local and Slurm executors of `fscil-bench run --executor`.
  if ! "$VENV/bin/python" -c "import submitit" 2>/dev/null; then
    pip_install "submitit>=1.5"
  fi
  # learn2learn 0.2.0 ships an sdist whose generated C does not compile on Python 3.11: rebuild
  # its extensions from the .pyx sources, skip its qpth/gsutil requirements (they pin numpy<2)
  # and add gym, which its import needs.
  if ! "$VENV/bin/python" -c "import learn2learn" 2>/dev/null; then
    pip_install cython
    pip_install --no-deps "learn2learn==0.2.0" --config-settings=--build-option=build_ext
    pip_install "gym==0.26.2"
  fi
  "$VENV/bin/python" -c "import avalanche, learn2learn" 2>/dev/null \
    && echo "installed: core, Avalanche, learn2learn" \
    || { echo "error: Avalanche or learn2learn failed to install (see the pip output above)" >&2; exit 1; }
else
  echo "installed: core"
fi

# --test: headless Chromium renders the HTML leaderboard in tests (skipped there without it).
if [ -n "$WITH_TEST_TOOLS" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
  if command -v apt-get >/dev/null 2>&1 \
      && $SUDO apt-get update -q >/dev/null \
      && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null; then
    echo "installed: chromium"
  else
    echo "warning: could not install chromium with apt-get; the HTML report test will be skipped" >&2
  fi
fi
