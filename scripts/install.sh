#!/usr/bin/env bash
# Set up everything fscil-bench needs in a virtual environment (default: ./.venv).
#   bash scripts/install.sh            # core + Avalanche + learn2learn + submitit + timm + open_clip + test tools
#   FSCIL_CORE_ONLY=1 bash scripts/install.sh   # core only (torch, torchvision, numpy, pandas, ...)
#   bash scripts/install.sh --test     # also Debian's chromium (headless), for the HTML report test
#   FSCIL_INSTALLER=pip bash scripts/install.sh  # use pip even where uv can be had
# Safe to rerun: it skips what is already installed.
#
# Installer: uv when it can be had (it unpacks wheels in parallel: about 1 min for torch and its
# CUDA libraries where pip takes about 4), else pip. uv does not read pip's configuration, so the
# package locations and constraints pip is configured with on this machine are passed to it.
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
PY="$VENV/bin/python"

# pip, minus the noise of index locations this machine's pip configuration may name but lack.
pip_install() {
  "$PY" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}

# uv's options for what pip is configured with: find-links, extra index URLs, an index URL and
# a constraints file (from pip.conf files and PIP_* variables alike).
uv_options_from_pip_config() {
  "$PY" -m pip config list 2>/dev/null | while IFS='=' read -r key value; do
    value=${value#\'}; value=${value%\'}
    for item in $value; do
      case "$key" in
        *.find-links) printf -- '--find-links\n%s\n' "$item" ;;
        *.extra-index-url) printf -- '--extra-index-url\n%s\n' "$item" ;;
        *.index-url) printf -- '--index-url\n%s\n' "$item" ;;
        *.constraint) [ -f "$item" ] && printf -- '--constraint\n%s\n' "$item" ;;
      esac
    done
  done
}

UV=
if [ "${FSCIL_INSTALLER:-uv}" = uv ]; then
  if [ -x "$VENV/bin/uv" ] || pip_install uv; then
    UV="$VENV/bin/uv"
    mapfile -t UV_OPTIONS < <(uv_options_from_pip_config)
    # Several indexes may each hold some releases of a package: pick the best over all of them, as pip does.
    # Compile bytecode at install time, as pip does: where PYTHONDONTWRITEBYTECODE is set, Python
    # never caches it, and every process would compile torch and Avalanche afresh (15-40 s).
    UV_OPTIONS+=(--index-strategy unsafe-best-match --compile-bytecode --python "$PY")
  else
    echo "note: uv could not be installed; installing with pip" >&2
  fi
fi
install() {
  if [ -n "$UV" ]; then
    "$UV" pip install -q "${UV_OPTIONS[@]}" "$@"
  else
    pip_install "$@"
  fi
}

if [ -z "${FSCIL_CORE_ONLY:-}" ]; then
  # One resolve for everything: the core, the Avalanche adapter, submitit (the local and Slurm
  # executors of `fscil-bench run --executor`), timm and open_clip (the pretrained track's
  # backbones), test tools, and what learn2learn's build and import need (Cython; gym, which its
  # import needs).
  install -e ".[test,avalanche,cluster,pretrained]" cython "gym==0.26.2"
  # learn2learn 0.2.0 ships an sdist whose generated C does not compile on Python 3.11: rebuild
  # its extensions from the .pyx sources, skip its qpth/gsutil requirements (they pin numpy<2).
  if ! "$PY" -c "import learn2learn" 2>/dev/null; then
    if [ -n "$UV" ]; then
      install --no-deps --no-build-isolation "learn2learn==0.2.0" -C--build-option=build_ext
    else
      pip_install --no-deps "learn2learn==0.2.0" --config-settings=--build-option=build_ext
    fi
  fi
  "$PY" -c "import fscil_bench, torch, torchvision, pandas, tabulate, matplotlib"
  "$PY" -c "import avalanche, learn2learn, timm, open_clip" 2>/dev/null \
    && echo "installed: core, Avalanche, learn2learn, timm, open_clip" \
    || { echo "error: Avalanche, learn2learn, timm or open_clip failed to install (see the installer's output above)" >&2; exit 1; }
else
  install -e ".[test]"
  "$PY" -c "import fscil_bench, torch, torchvision, pandas, tabulate, matplotlib"
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
