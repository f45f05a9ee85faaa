#!/usr/bin/env bash
# One call on a GPU machine proves what a CPU cannot (issue 13). Offline, under 8 minutes on one
# H100/H200, one report file:
#
#     bash scripts/gpu_check.sh [REPORT]          # default: gpu_check_report.md
#
# Sections (each with its own time limit; a failing or slow section is reported and the next
# one runs): the environment and the kernels chosen; our bf16 autocast placement against real
# torch.autocast on the GPU (a double, a single block and the final layer); the GPU-only tests; the DiT, FP8, sampling
# and VAE conformance cases on the GPU in float32 (TF32 off) with every attention backend that
# computes float32; attention backends at the 720p token count; FP8 matmul accuracy and speed at
# the DiT's Linear sizes; each offload mode's measured peak (real width, 2+2 blocks, 720p tokens)
# against scripts/memory_plan.py's prediction; --compile speed-up; the full DiT's step time and
# MFU at 544p and 720p; a short end-to-end scripts/benchmark.py --full run. See docs/benchmarks.md
# ("GPU check") for what to bring to a machine without internet.
#
# Environment: HYVIDEO_GPU_CHECK_PYTHON (default python), HYVIDEO_CONFORMANCE (default
# ../shared/conformance), HYVIDEO_GPU_CHECK_BUDGET (seconds, default 470).
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
REPORT=${1:-gpu_check_report.md}
PY=${HYVIDEO_GPU_CHECK_PYTHON:-python}
CONFORMANCE=${HYVIDEO_CONFORMANCE:-../shared/conformance}
BUDGET=${HYVIDEO_GPU_CHECK_BUDGET:-470}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch missing, a CPU-only build, or no device): run it on the GPU machine" >&2
    exit 2
fi

START=$SECONDS
FAILED=0
PARTS_JSON=$(mktemp)
trap 'rm -f "$PARTS_JSON"' EXIT

{
    echo "# GPU check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- host: $(hostname)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    echo "- torch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
    echo "- budget: ${BUDGET} s"
    echo
} > "$REPORT"

# section TITLE LIMIT_S COMMAND...: runs COMMAND with a time limit (never past the budget),
# appending its output and status to the report.
section() {
    local title=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 10)); then
        printf '## %s\n\nSKIPPED: the %s s budget is spent\n\n' "$title" "$BUDGET" >> "$REPORT"
        FAILED=1
        return
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS out rc
    out=$(timeout --kill-after=10 "$limit" "$@" 2>&1)
    rc=$?
    local status="ok"
    if ((rc == 124 || rc == 137)); then
        status="TIMEOUT after ${limit} s"
        FAILED=1
    elif ((rc != 0)); then
        status="FAILED (exit $rc)"
        FAILED=1
    fi
    {
        printf '## %s\n\n`%s` -- %s in %d s\n\n```\n' "$title" "$*" "$status" $((SECONDS - t0))
        printf '%s\n' "$out" | tail -n 200
        printf '```\n\n'
    } >> "$REPORT"
    echo "gpu_check: $title: $status ($((SECONDS - t0)) s)" >&2
}

part() {  # part NAME LIMIT: one part of scripts/gpu_check.py
    section "$1" "$2" "$PY" scripts/gpu_check.py "$1" --device cuda --json "$PARTS_JSON"
}

part env 30
part precision 30
section "GPU-only tests" 60 "$PY" -m pytest -q -rs -p no:cacheprovider \
    tests/test_attention.py tests/test_offload.py tests/test_gpu_defects.py tests/test_conformance_dit.py \
    -k "gpu or accelerator or cuda"
if [[ -d "$CONFORMANCE/cases" ]]; then
    for backend in sdpa cudnn flex auto; do  # the float32 goldens: kernels that compute float32
        section "conformance on the GPU, float32, attention $backend" 30 \
            "$PY" -m hyvideo.conformance "$CONFORMANCE" --device cuda --attention "$backend" \
            --kind dit --kind fp8 --kind sampling --kind vae
    done
else
    printf '## conformance\n\nSKIPPED: no conformance data at %s (set HYVIDEO_CONFORMANCE)\n\n' "$CONFORMANCE" >> "$REPORT"
    FAILED=1
fi
part attention 45
part fp8 30
part offload 60
part compile 70
part step 80
section "end to end: scripts/benchmark.py --full" 70 "$PY" scripts/benchmark.py --full --device cuda \
    --sizes 544x960 --frames 33 --steps 2 --repeats 1 --warmup 0

{
    echo "## summary"
    echo
    echo "$((SECONDS - START)) s in all; $([[ $FAILED == 0 ]] && echo 'every section ok' || echo 'some sections FAILED, timed out or were skipped')"
    echo
    echo "### the parts as JSON (one object per line)"
    echo
    echo '```'
    cat "$PARTS_JSON"
    echo '```'
} >> "$REPORT"
echo "gpu_check: report in $REPORT" >&2
exit $FAILED
