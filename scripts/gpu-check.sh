#!/usr/bin/env bash
# scripts/gpu-check.sh — every GPU measurement framecast needs, in one run of at most ~8 minutes.
#
# On a fresh GPU machine with no internet (python3 with torch+CUDA, triton, transformers,
# accelerate, safetensors); the other Python packages travel as wheels in .whl/
# (scripts/gpu-wheels.sh fills it beforehand, on a machine with a registry). Steps, each time-boxed:
#   1. env         nvidia-smi, versions
#   2. gpu-tests   pytest -m gpu: Triton kernels in bf16 at Wan shapes vs the fp32 reference (bounds)
#   3. attention   framecast bench attention: dense backends (SDPA/flash/flex/triton) and the
#                  fused streaming kernel vs the composed path, TFLOP/s; writes the table auto reads
#   4. stream-*    framecast bench stream, wan2.1-t2v-1.3b (832x480, bf16, random weights, 4 steps):
#                  batch 1 and 2 with auto, batch 1 with FRAMECAST_ATTN=fused (auto now uses the
#                  table from step 3 when fused won there)
#   5. serve       framecast bench serve N=1,2,4 sessions on the same model
#   6. memory-24gb scripts/memory_cap.py: process capped to 24 GB, peak memory per component
# Output in $OUT (at most 8 files come back from the device tool): summary.md, results.json (every
# step's JSON), logs.tar.gz (every log), and the measured table <device>.json (copy it to
# kernels/tables/ to let `auto` use it).
#
# GPU_CHECK_DRY=1 runs the same steps with tiny shapes on the CPU (tests/kernels/test_gpu_check_script.py).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
DRY=${GPU_CHECK_DRY:-0}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
: > "$WORK/steps.tsv"
T0=$(date +%s)

if ls .whl/*.whl > /dev/null 2>&1; then  # carried wheels: install without an index
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fc-site .whl/*.whl \
    && export PYTHONPATH=/tmp/fc-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# step NAME SECONDS CMD...: run with a time box, log to $WORK/NAME.log, record status and wall time
SCALE=${GPU_CHECK_LIMIT_SCALE:-$([ "$DRY" = 1 ] && echo 20 || echo 1)}  # dry runs share slow CPUs
step() {
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  local start=$(date +%s) status
  echo "== $name (limit ${limit}s, t=$(( start - T0 ))s)"
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" >> "$WORK/steps.tsv"
  tail -n 15 "$WORK/$name.log"
}
FC=("$PY" -m client.cli)  # the framecast command of this checkout

if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  MODEL=tiny
  ATTN=(--small --device cpu --sections dense,stream --frames 6 --batch 1 --backends sdpa --stream-batch 1)
  STREAM=(--model tiny --chunks 2 --device cpu)
  SERVE=(--model tiny --sessions 1 --seconds 1 --device cpu)
  MEM=(--dry)
else
  MODEL=wan2.1-t2v-1.3b
  ATTN=(--sections dense,stream --frames 12,21 --batch 1,2 --stream-batch 1,2 --rep-ms 100)
  STREAM=(--model $MODEL --chunks 6)
  SERVE=(--model $MODEL --sessions 1,2,4 --seconds 8)
  MEM=(--model $MODEL)
fi

step env 60 bash -c "nvidia-smi || true; $PY -c 'import torch, triton, sys; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available()); print(\"triton\", triton.__version__)'"
step gpu-tests 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests/kernels/test_gpu_kernels.py tests/kernels/test_triton.py
step attention 150 "${FC[@]}" bench attention "${ATTN[@]}" --write-table "$WORK/tables" --json "$WORK/attention.json"
step stream-b1 90 "${FC[@]}" bench stream "${STREAM[@]}" --batch 1 --json "$WORK/stream-b1.json"
step stream-b2 90 "${FC[@]}" bench stream "${STREAM[@]}" --batch 2 --json "$WORK/stream-b2.json"
step stream-b1-fused 90 env FRAMECAST_ATTN=fused "${FC[@]}" bench stream "${STREAM[@]}" --batch 1 --json "$WORK/stream-b1-fused.json"
step serve 120 "${FC[@]}" bench serve "${SERVE[@]}" --json "$WORK/serve.json"
step memory-24gb 120 $PY scripts/memory_cap.py "${MEM[@]}" --json "$WORK/memory-24gb.json"

# collect: one results.json, the table, the logs, a summary
$PY - "$WORK" "$OUT" "$DRY" "$(( $(date +%s) - T0 ))" <<'PY'
import json, sys, pathlib, shutil
work, out, dry, total = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
steps = [dict(zip(("name", "exit", "seconds"), line.split("\t"))) for line in (work / "steps.tsv").read_text().splitlines()]
results = {"dry": dry, "total_seconds": total, "steps": steps}
for p in sorted(work.glob("*.json")):
    results[p.stem] = json.loads(p.read_text())
tables = sorted((work / "tables").glob("*.json")) if (work / "tables").is_dir() else []
for t in tables:
    shutil.copy(t, out / t.name)
(out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
lines = [f"# framecast gpu-check ({'DRY, tiny shapes on CPU' if dry else 'GPU'}), {total} s", "",
         "| step | exit | s |", "|---|---|---|"] + [f"| {s['name']} | {s['exit']} | {s['seconds']} |" for s in steps]
att = results.get("attention", {})
lines += ["", f"device: {att.get('device')}", "", "## attention: stream (fused vs composed)",
          "| B | ring | composed | ms | TFLOP/s | fused ms | TFLOP/s | x | rel err |", "|---|---|---|---|---|---|---|---|---|"]
f = lambda x, spec: "-" if x is None else format(x, spec)
for r in att.get("stream", []):
    lines.append(f"| {r['batch']} | {r['ring']} | {r['composed_backend']} | {f(r.get('composed_ms'), '.3f')} | "
                 f"{f(r.get('composed_tflops'), '.1f')} | {f(r.get('fused_ms'), '.3f')} | {f(r.get('fused_tflops'), '.1f')} | "
                 f"{f(r.get('speedup'), '.2f')} | {f(r.get('fused_rel_error'), '.1e')} |")
lines += ["", "## attention: dense backends", "| B | frames | backend | ms | TFLOP/s | rel err |", "|---|---|---|---|---|---|"]
for r in att.get("dense", []):
    lines.append(f"| {r['batch']} | {r['attended_frames']} | {r['backend']} | {f(r.get('ms'), '.3f')} | "
                 f"{f(r.get('tflops'), '.1f')} | {f(r.get('rel_error'), '.1e')} |")
lines += ["", "## stream (end to end)", "| run | FPS | per stream | first chunk s | denoise ms | cache write ms | VAE ms | peak MiB |",
          "|---|---|---|---|---|---|---|---|"]
for name in ("stream-b1", "stream-b2", "stream-b1-fused"):
    s = results.get(name)
    if s:
        m = s["mean_s"]
        lines.append(f"| {name} | {s['fps']:.1f} | {s['fps_per_stream']:.1f} | {s['first_chunk_s']:.3f} | "
                     f"{m['denoise_s'] * 1e3:.0f} | {m['cache_write_s'] * 1e3:.0f} | {m['vae_decode_s'] * 1e3:.0f} | {s['peak_memory_mb']:.0f} |")
serve = results.get("serve")
if serve:
    lines += ["", "## serve", "```", json.dumps(serve.get("results", serve), indent=1)[:3000], "```"]
mem = results.get("memory-24gb")
if mem:
    last = mem["attempts"][-1]
    comp = {k: round(v / 2**30, 2) for k, v in last.get("components_bytes", {}).items()}
    lines += ["", "## 24 GB cap", f"fits: {mem.get('fits')}, text encoder offloaded: {last.get('offload_text_encoder')}, "
              f"peak {last.get('peak_gib', float('nan')):.2f} GiB, components (GiB): {comp}"]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
tar -czf "$OUT/logs.tar.gz" -C "$WORK" .
failed=$(awk -F'\t' '$2 != 0' "$WORK/steps.tsv" | wc -l)
rm -rf "$WORK"
echo "gpu-check: $failed step(s) failed; results in $OUT"
exit "$failed"  # 0 = every step passed
