#!/usr/bin/env bash
# Training burst for a lent GPU (README: "Training"): tunes the shipped model in two short phases, for two encoder
# anchors side by side on the one GPU (small models leave it mostly idle, so two runs cost little more than one).
#   1. decoder phase: VAE decoder + encoder, the encoder held near its latents (anchor a: 0.1, b: 0.03);
#   2. U-Net stage 2 (conditions dropped, classifier-free guidance) fine-tuned on the tuned encoder's latents.
# usage: bench/gpu_train.sh DATA OUT [MINUTES_PER_PHASE=2.5]   (env: DEVICE=cuda, EXTRA="more train options, last")
# Each run folder OUT/{a,b}-{dec,unet} holds model/ (fp16 weights, loadable with --model) and history.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1 OUT=$2 MIN=${3:-2.5}
mkdir -p "$OUT"
train() { python3 -m difp_stream train "$DATA" --device "${DEVICE:-cuda}" --no-progress --checkpoint-seconds 30 \
            --phase-minutes "$MIN" "$@" ${EXTRA:-}; }
burst() {  # ANCHOR TAG
  train --out "$OUT/$2-dec" --init difp_stream/weights/default --from-phase decoder --encoder-anchor "$1" \
        --batch-vae 128 --lr-decoder 2e-4 >"$OUT/$2-dec.log" 2>&1
  train --out "$OUT/$2-unet" --init "$OUT/$2-dec/model" --from-phase unet2 --decoder-steps 0 \
        --batch-unet 256 --lr-unet 1e-4 >"$OUT/$2-unet.log" 2>&1
}
burst 0.1 a & pa=$!
burst 0.03 b & pb=$!
wait $pa; wait $pb
tail -n 3 "$OUT"/*.log
