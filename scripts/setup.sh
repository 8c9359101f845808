#!/usr/bin/env bash
# Set up framecast in ./.venv (idempotent; re-running only installs what is missing).
#   scripts/setup.sh         runtime: torch, framecast and its dependencies
#   scripts/setup.sh --dev   also test tools and the system packages the test suite uses
#                            (ffmpeg for ffprobe, chromium for the page test, redis-server, nginx)
# torch: an existing torch in the venv is left alone (a CUDA build stays); on a machine with an
# NVIDIA driver pip's default (CUDA) torch is installed, otherwise the CPU build. Set
# FRAMECAST_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) to choose the torch index.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
VENV=${FRAMECAST_VENV:-.venv}
PY=${PYTHON:-python3}

say() { echo "[setup] $*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  # reuse a system-wide CUDA torch instead of downloading another one
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

if "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  say "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed: leaving it"
elif command -v nvidia-smi >/dev/null 2>&1; then
  say "NVIDIA driver found: installing CUDA torch"
  "${PIP[@]}" "torch>=2.4,<=2.14.1" ${FRAMECAST_TORCH_INDEX:+--index-url "$FRAMECAST_TORCH_INDEX"}
else
  say "no GPU: installing CPU torch"
  "${PIP[@]}" "torch==2.13.0" ${FRAMECAST_TORCH_INDEX:+--index-url "$FRAMECAST_TORCH_INDEX"}
fi

if [[ $DEV == 1 ]]; then
  say "installing framecast (editable) with dev extras"
  "${PIP[@]}" -e ".[dev]"
  # the official Wan code (test oracle for the release-format loaders): its wheel requires flash_attn,
  # which needs CUDA to build, so it is installed without dependencies (einops comes with the dev extra)
  "${PIP[@]}" --no-deps "wan22==2.2.11"
  need=()
  command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v nginx >/dev/null 2>&1 || need+=(nginx)
  { docker compose version || command -v docker-compose; } >/dev/null 2>&1 || need+=(docker-compose)
  if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      say "apt-get install ${need[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      say "warning: missing system packages ${need[*]} (tests that need them will be skipped)"
    fi
  fi
else
  say "installing framecast (editable)"
  "${PIP[@]}" -e .
fi
say "done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
