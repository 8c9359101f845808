#!/usr/bin/env bash
# Download, here, the pure-Python / manylinux wheels that framecast needs and the GPU machine's
# image lacks (its package list: /work/.library/device/KINDS.md), into .whl/ (git-excluded), so a
# `run` call can carry them: run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=600).
# Versions are the ones this checkout is tested with. Python 3.12, x86-64 (the image's).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
PY=${PYTHON:-python3}
PKGS=(diffusers==0.42.1 importlib_metadata==10.2.0 fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4
      pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0
      typing-inspection==0.4.5 typing_extensions==4.16.0 uvicorn==0.54.0 websockets==17.4
      python-multipart==0.0.34 av==18.1.0)
$PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PKGS[@]}"
du -sh .whl
