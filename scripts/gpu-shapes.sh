#!/usr/bin/env bash
# scripts/gpu-shapes.sh — the shipped `shapes` recipe's expensive stages on one GPU, in one device
# call of under 10 minutes (issue 19: the CPU teacher is the quality bottleneck).
#
#   bash scripts/gpu-shapes.sh --prepare     # here (needs a package registry): fills .gpu-shapes/
#   run(command="bash scripts/gpu-shapes.sh", carry=[".gpu-shapes"], timeout_s=600)   # the device tool
#
# --prepare downloads the pure-Python wheels the GPU image lacks (scripts/gpu-wheels.sh's list
# without PyAV, which training does not use) and packs the text encoder (scripts/pack_minilm.py:
# 20 MiB instead of the package's 88), so repo + carry stay under the tool's 64 MiB.
# On the GPU: teacher -> ode-pairs -> ode-init -> self-forcing (configs/shapes.yaml, with the
# serving-condition options on) from the shipped VAE, each stage time-boxed by its max_minutes;
# the student and teacher are stored in float16. Back in $OUT: shapes-gpu.tar (the model
# directory: `tar -xf shapes-gpu.tar` then `framecast eval --model shapes-gpu`), summary.md,
# logs.tar.gz. Budgets scale with GPU_SHAPES_MINUTES (default 6.5 minutes of training in all;
# encoding the 2048 clips and loading come on top).
#
# GPU_SHAPES_DRY=1 runs the same steps on the CPU, a few optimizer steps per stage (the plumbing
# check: `GPU_SHAPES_DRY=1 OUT=/tmp/gs bash scripts/gpu-shapes.sh`).
set -u -o pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-shapes
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
  set -e
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  grep -qx "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >> "$exclude"
  mkdir -p "$CARRY/whl"
  PKGS=$(sed -n '/^PKGS=(/,/)/p' scripts/gpu-wheels.sh | tr -d '()' | sed 's/PKGS=//' | tr ' ' '\n' | grep -v '^av==' | grep .)
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CARRY/whl" $PKGS
  ${VENV_PY:-.venv/bin/python} scripts/pack_minilm.py "$CARRY/minilm.tar.gz"
  du -sh "$CARRY"
  exit 0
fi

OUT=${OUT:-$PWD/gpu-shapes-out}
DRY=${GPU_SHAPES_DRY:-0}
MINUTES=${GPU_SHAPES_MINUTES:-6.5}
mkdir -p "$OUT"
WORK=$(mktemp -d)
T0=$(date +%s)
if [ "$DRY" != 1 ]; then
  [ -f "$CARRY/minilm.tar.gz" ] || { echo "no $CARRY/: run 'bash scripts/gpu-shapes.sh --prepare' here and carry it"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fc-site "$CARRY"/whl/*.whl \
    && export PYTHONPATH=/tmp/fc-site
  tar -xzf "$CARRY/minilm.tar.gz" -C "$WORK" && export FRAMECAST_MINILM_DIR="$WORK/minilm"
  DEVICE=cuda
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
else
  PY=${VENV_PY:-.venv/bin/python}
  DEVICE=cpu
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

MODEL="$WORK/shapes-gpu"
mkdir -p "$MODEL" && cp -r checkpoints/shapes/vae "$MODEL/vae"
# the recipe: configs/shapes.yaml with the device, the budgets and the GPU batch sizes overridden
$PY - "$WORK/recipe.yaml" "$MODEL" "$WORK/run" "$DEVICE" "$MINUTES" "$DRY" <<'PY'
import sys, yaml
path, out, work, device, minutes, dry = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6] == "1"
cfg = yaml.safe_load(open("configs/shapes.yaml"))
cfg.update(out=out, work_dir=work, device=device, threads=1 if dry else 8)
share = {"teacher": 0.55, "ode_pairs": 0.08, "ode_init": 0.12, "self_forcing": 0.25}  # of MINUTES
for stage, part in share.items():
    cfg.setdefault(stage, {})["max_minutes"] = round(minutes * part, 2)
    if dry and stage != "ode_pairs":  # ode-pairs is sized by num_pairs
        cfg[stage].update(max_minutes=0, max_steps=2)
# start images all the way (docs/DISTILL.md, the shipped run): an image-led teacher whose led crops continue the
# image at once, image-led ODE pairs, image rollouts judged against that teacher from their first chunk
cfg["teacher"].update(batch_size=64, num_clips=8 if dry else 2048, ckpt_every=500, image_lead_share=0.3,
                      image_lead_adjacent=True)
cfg["ode_pairs"].update(num_pairs=12 if dry else 512, batch_size=4 if dry else 128, image_lead_share=0.34)  # dry: 1 led batch of 3
cfg["ode_init"].update(batch_size=64, ckpt_every=500)
# Self-Forcing under serving conditions (docs/DISTILL.md): long rollouts, prompt switches, start images
cfg["self_forcing"].update(batch_size=2 if dry else 8, rollout_chunks=8, rollout_min_chunks=3, dmd_window_chunks=3,
                           switch_share=0.25, image_share=0.25, image_lead=True, image_start_window=True, ckpt_every=100)
if dry:
    cfg["self_forcing"].update(batch_size=1, rollout_chunks=3, rollout_min_chunks=2, dmd_window_chunks=2, critic_steps=1)
    cfg["ode_pairs"]["steps"] = 4
yaml.safe_dump(cfg, open(path, "w"), sort_keys=False)
print(yaml.safe_dump({k: cfg[k] for k in share}, sort_keys=False))
PY

: > "$WORK/steps.tsv"
for stage in teacher ode-pairs ode-init self-forcing; do
  start=$(date +%s)
  echo "== $stage (t=$(( start - T0 ))s)"
  timeout --kill-after=10 480 $PY -m client.cli distill "$stage" --config "$WORK/recipe.yaml" > "$WORK/$stage.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$stage" "$status" "$(( $(date +%s) - start ))" >> "$WORK/steps.tsv"
  tail -n 12 "$WORK/$stage.log" | tr '\r' '\n' | tail -n 6
  [ "$status" = 0 ] || break
done

failed=$(awk -F'\t' '$2 != 0' "$WORK/steps.tsv" | wc -l)
if [ "$failed" = 0 ]; then
  $PY scripts/half_weights.py "$MODEL" && tar -cf "$OUT/shapes-gpu.tar" -C "$WORK" shapes-gpu
fi
{
  echo "# framecast gpu-shapes ($([ "$DRY" = 1 ] && echo 'DRY, CPU' || echo GPU)), $(( $(date +%s) - T0 )) s"
  echo; echo "| stage | exit | s |"; echo "|---|---|---|"
  awk -F'\t' '{print "| " $1 " | " $2 " | " $3 " |"}' "$WORK/steps.tsv"
  echo; echo '```'; cat "$WORK/run/summary.json" 2>/dev/null; echo '```'
} > "$OUT/summary.md"
cat "$OUT/summary.md"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude shapes-gpu --exclude run .
rm -rf "$WORK"
echo "gpu-shapes: $failed stage(s) failed; results in $OUT"
exit "$failed"
