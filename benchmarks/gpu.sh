#!/usr/bin/env bash
# The GPU figures of the measurement, search and pruning notes, in one go, on the
# machine's first CUDA device. Run from the repository root after the README install:
#
#     bash benchmarks/gpu.sh            # writes benchmarks/*_gpu*.{csv,md}
#
# Every step is one of the documented CLIs; each writes its own file, so a step that
# fails (e.g. torch.compile unavailable) leaves the others' figures in place.
set -uo pipefail
out=${OUT_DIR:-benchmarks}
mkdir -p "$out"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "benchmarks/gpu.sh needs a CUDA device")' || exit 2
status=0
log=/dev/null
step() {  # run one command, copy its output to $log, remember a failure and go on
  echo "== $*" | tee -a "$log" >&2
  "$@" | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAILED: $*" >&2; status=1; }
}

# Measurement (bench_gpu.md): the paper's setting, then fp16 NHWC, then the best settings
# for the dense-peak figure of the big deploy nets.
log="$out/bench_gpu.md"; : > "$log"
step python -m repvgg_nas.bench --models A0 --baselines resnet18,resnet34,resnet50 --device cuda \
     --batch-size 128 --dtype fp32 --rounds 3 --repeatability 5 --out "$out/bench_gpu_fp32_b128.csv"
step python -m repvgg_nas.bench --models A0 --baselines resnet18,resnet34,resnet50 --device cuda \
     --batch-size 256 --dtype fp16 --channels-last --rounds 3 --repeatability 5 \
     --out "$out/bench_gpu_fp16_b256.csv"
step python -m repvgg_nas.bench --models A2,B3 --baselines none --device cuda --batch-size 256 \
     --dtype fp16 --channels-last --cuda-graphs --out "$out/bench_gpu_peak.csv"
step python -m repvgg_nas.bench --models A2,B3 --baselines none --device cuda --batch-size 256 \
     --dtype fp16 --channels-last --compile --compile-mode max-autotune \
     --out "$out/bench_gpu_peak_compiled.csv"
log=/dev/null

# Search (search_gpu.md): the default a_family study on the GPU, per-phase breakdown.
reports=$(mktemp -d)
step python -m repvgg_nas.search --study a_family --device cuda --no-progress --reports-dir "$reports"
step python - "$reports/a_family/trials.csv" "$out/search_gpu.md" <<'EOF'
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1])
t = [c for c in df.columns if c.startswith("t_")]
df["non_training_share"] = 1 - df["t_train"] / df["duration_s"]
cols = ["number", "reference", "params_m", "train_images_per_s", *t, "duration_s", "non_training_share", "device"]
rows = [["" if pd.isna(v) else str(round(v, 3) if isinstance(v, float) else v) for v in r]
        for r in df[cols].itertuples(index=False)]
lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]
with open(sys.argv[2], "w") as f:
    f.write("# `python -m repvgg_nas.search --study a_family --device cuda`, phase by phase\n\n")
    f.write("\n".join(lines) + "\n")
print(open(sys.argv[2]).read())
EOF

# Pruning (prune_gpu.md): the same table as prune_cpu.md, throughput measured on the GPU.
step python benchmarks/prune_a0.py --device cuda --batch-size 128 --out "$out/prune_gpu.md"
exit $status
