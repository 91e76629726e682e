#!/usr/bin/env bash
# Every GPU check of issue 17 in one call, for a short lease on a GPU machine (benchmarks/GPU-RUN.md).
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS] [--only STEP,STEP] [--rehearse]
#
# Steps, in order of what they are worth if time runs out (the suite runs in the background from
# the second step on, and must end before the benchmark starts, which wants a quiet machine):
#   env            nvidia-smi, versions, CuPy's usability probe, the data files (checksums)
#   step-vs-numpy  a CuPy training step against NumPy's from the same weights, Adam state, batch, eps
#                  (float64 and float32, every likelihood; tolerances in tests/test_gpu.py)
#   fused-kernels  each fused CuPy kernel against the plain code it replaces
#   gradcheck      numpyvae gradcheck --backend cupy, float64
#   train10        numpyvae train --backend cupy, every other setting its default (10 epochs,
#                  figures too); the last test loss must be <= 244.8, as on NumPy
#   resume         Ctrl-C part way into epoch 2, --resume, and bit-for-bit equality with a run
#                  never stopped (benchmarks/gpu_resume_check.py)
#   bench          benchmarks/bench_gpu.py: CuPy, PyTorch eager, PyTorch CUDA graph, NumPy on the CPU
#   suite          the whole test suite, with NUMPYVAE_REQUIRE_GPU=1: a GPU test that skips fails
#                  (less tests/test_gpu_check.py's rehearsal of this script, a minute of CPU work);
#                  in the background, beside the steps from step-vs-numpy to resume
#
# Everything lands in the output folder ($OUT when set, else --out, default ./gpu-check-out), also
# when a step fails or runs out of time: summary.tsv (step, status, exit status, seconds, note),
# gpu_check.log (every step's output, appended as it runs), metrics.csv (train10's), resume.json,
# bench_gpu.json, bench_gpu.md and bench_gpu.png: 7 files, under the device tool's 8. Scratch (run
# directories, checkpoints) goes to a temporary directory, not the output folder.
#
# Each step gets its own time limit, cut to what is left of --budget (default 440 s), so the
# whole call ends inside it; a step that no longer fits is recorded as "not run".
#
# --rehearse runs the same steps on a machine without a GPU: --backend fakegpu for numpyvae,
# PyTorch on the CPU, small models and one or two epochs, the GPU tests collected but not required
# (they skip there), and only tests/test_gpu.py's GPU tests for the suite. The exit status is 0 only if every
# step that ran passed and none was left out.
#
# Data: numpyvae's usual search, $NUMPYVAE_DATA_DIR, else ./data, else the system's directory.
# On the device machine, carry `data` (the four Fashion-MNIST .gz files in ./data).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
out=${OUT:-}
budget=440
only=""
rehearse=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ -n "${OUT:-}" ] || out=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --rehearse) rehearse=1; shift ;;
        -h|--help) awk 'NR > 1 && /^set -u/ { exit } NR > 1' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
out=${out:-$root/gpu-check-out}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/numpyvae-gpu-check.XXXXXX") || exit 1
summary=$out/summary.tsv
log=$out/gpu_check.log
python=${PYTHON:-python3}
started=$(date +%s)
failures=0

cd "$root" || exit 1
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

# Settings of the steps, as plain words (exported: each step runs in its own `bash -c` under `timeout`).
if [ "$rehearse" = 1 ]; then
    backend=fakegpu
    train_args="--epochs 1 --hidden-dim 16 --latent-dim 4 --batch-size 1000"
    resume_epochs=2
    resume_args="--hidden-dim 8 --latent-dim 2 --batch-size 2000"
    gradcheck_args="--quick"
    bench_args="--rehearse --conv"
    suite_args="-m gpu tests/test_gpu.py"   # the suite's code path; the real suite runs in the test suite
    max_test_loss=600           # a tiny model after one epoch; proves the check, not the model
    require_gpu=0
else
    backend=cupy
    train_args=""
    resume_epochs=3
    resume_args=""
    gradcheck_args=""
    bench_args="--conv"
    # all of it, but for the rehearsal of this script (tests/test_gpu_check.py), already run on CPUs
    suite_args="--deselect tests/test_gpu_check.py::test_rehearsal"
    max_test_loss=244.8         # what 10 epochs of the defaults reach on NumPy
    require_gpu=1
fi
export backend train_args resume_epochs resume_args gradcheck_args bench_args suite_args max_test_loss require_gpu python work out

printf 'step\tstatus\texit\tseconds\tnote\n' > "$summary"
{ echo "gpu_check.sh $(date -u +%FT%TZ) rehearse=$rehearse budget=${budget}s out=$out scratch=$work"
  echo "git: $(git -C "$root" log --oneline -1 2>/dev/null || echo 'not a git checkout')"; } > "$log"

wanted() {   # wanted STEP: true unless --only leaves it out
    [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]
}

fit() {   # fit LIMIT: LIMIT, cut to what is left of the budget; fails when under 20 s are left
    local left=$(( budget - ($(date +%s) - started) ))
    [ "$left" -ge 20 ] || return 1
    if [ "$1" -le "$left" ]; then echo "$1"; else echo "$left"; fi
}

not_run() {
    printf '%s\tnot run\t-\t0\tout of time (budget %ss)\n' "$1" "$budget" >> "$summary"
    failures=$((failures + 1))
}

record() {   # record NAME EXIT_STATUS SECONDS NOTE
    local result=pass
    if [ "$2" = 124 ] || [ "$2" = 137 ]; then
        result=timeout
    elif [ "$2" != 0 ]; then
        result=FAIL
    fi
    [ "$result" = pass ] || failures=$((failures + 1))
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$result" "$2" "$3" "$4" >> "$summary"
    echo "==== $1: $result (exit $2, ${3}s)" | tee -a "$log"
}

# step NAME LIMIT_SECONDS NOTE COMMAND...: run COMMAND (a function above, or a program) with a time
# limit, its output appended to the log, and record it. timeout puts the step in a process group of
# its own and ends all of it, children too.
step() {
    local name=$1 limit=$2 note=$3 t0
    shift 3
    wanted "$name" || return 0
    limit=$(fit "$limit") || { not_run "$name"; return 0; }
    echo "==== $name (limit ${limit}s): $*" | tee -a "$log"
    t0=$(date +%s)
    STEP_LIMIT=$limit timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >> "$log" 2>&1
    record "$name" "$?" $(( $(date +%s) - t0 )) "$note"
}

# start_step NAME LIMIT NOTE COMMAND...: the same in the background (its output kept apart until
# finish_step NAME appends it to the log and records it)
start_step() {
    local name=$1 limit=$2 note=$3
    shift 3
    wanted "$name" || return 0
    limit=$(fit "$limit") || { not_run "$name"; return 0; }
    echo "==== $name started in the background (limit ${limit}s): $*" | tee -a "$log"
    date +%s > "$work/$name.start"
    printf '%s' "$note" > "$work/$name.note"
    ( timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" > "$work/$name.log" 2>&1
      echo $? > "$work/$name.exit" ) &
    echo $! > "$work/$name.pid"
}

finish_step() {
    local name=$1
    [ -f "$work/$name.pid" ] || return 0
    wait "$(cat "$work/$name.pid")"
    echo "==== $name (ran in the background), its output:" >> "$log"
    cat "$work/$name.log" >> "$log"
    record "$name" "$(cat "$work/$name.exit")" $(( $(date +%s) - $(cat "$work/$name.start") )) "$(cat "$work/$name.note")"
}

env_report() {
    nvidia-smi || echo "(no nvidia-smi)"
    "$python" - "$backend" "$require_gpu" <<'EOF'
import importlib.metadata, platform, sys
backend, require_gpu = sys.argv[1], sys.argv[2] == "1"
print("python", platform.python_version(), platform.platform())
for name in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "matplotlib", "pytest", "hypothesis", "tqdm", "requests"):
    try:
        print(f"  {name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        print(f"  {name} not installed")
from numpyvae.backend import cuda_unavailable_reason, get_backend
reason = cuda_unavailable_reason()
print("CuPy usable:", "yes" if reason is None else f"no: {reason}")
from numpyvae.datasets import load_fashion_mnist
for split in ("train", "test"):
    images, labels = load_fashion_mnist(split, download=False)
    print(f"Fashion-MNIST {split}: {images.shape}, checksums verified")
get_backend(backend)
if require_gpu and reason is not None:
    sys.exit("CuPy cannot run here, so no GPU check can pass")
EOF
}

check_train() {   # train, then the last test loss against the bound
    # shellcheck disable=SC2086  # word splitting of the settings is meant
    "$python" -m numpyvae train --backend "$backend" --run-dir "$work/train10" $train_args || return $?
    cp "$work/train10/metrics.csv" "$out/metrics.csv"
    "$python" - "$work/train10/metrics.csv" "$max_test_loss" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
loss, bound = float(rows[-1]["test_loss"]), float(sys.argv[2])
print(f"epoch {rows[-1]['epoch']}: test loss {loss:.2f} (bound {bound}); seconds per epoch:",
      ", ".join(f"{float(r['seconds']):.1f}" for r in rows))
sys.exit(0 if loss <= bound else f"test loss {loss:.2f} is above {bound}")
EOF
}

gpu_pytest() {   # gpu_pytest -k EXPR: the GPU tests matching EXPR; none collected (exit 5) fails
    NUMPYVAE_REQUIRE_GPU=$require_gpu "$python" -m pytest -p no:cacheprovider -q -rA -m gpu tests/test_gpu.py "$@"
}

suite() {
    # shellcheck disable=SC2086
    NUMPYVAE_REQUIRE_GPU=$require_gpu "$python" -m pytest -p no:cacheprovider -q -rs $suite_args
}

gradcheck() {
    # shellcheck disable=SC2086
    "$python" -m numpyvae gradcheck --backend "$backend" --dtype float64 $gradcheck_args
}

resume() {
    # shellcheck disable=SC2086
    "$python" benchmarks/gpu_resume_check.py --backend "$backend" --epochs "$resume_epochs" --work "$work/resume" --json "$out/resume.json" -- $resume_args
}

bench() {
    # shellcheck disable=SC2086
    # rows stop starting before the step's limit, so the rows measured are written, not killed with it
    "$python" benchmarks/bench_gpu.py --out "$out" --budget $(( ${STEP_LIMIT:-200} - 15 )) $bench_args
}

export -f env_report check_train gpu_pytest suite gradcheck resume bench

step env 60 "versions, CuPy probe, data" env_report
# the suite is mostly CPU work: it runs beside the GPU steps, and is done before the benchmark starts
start_step suite 300 "whole suite, GPU tests required" suite
step step-vs-numpy 120 "CuPy step vs NumPy step" gpu_pytest -k steps_match
step fused-kernels 60 "fused kernels vs plain code" gpu_pytest -k fused
step gradcheck 120 "float64 finite differences on $backend" gradcheck
step train10 200 "test loss <= $max_test_loss" check_train
step resume 150 "Ctrl-C, resume, bit-exact" resume
finish_step suite
step bench 200 "bench_gpu.json/.md/.png" bench

total=$(( $(date +%s) - started ))
{ echo; echo "gpu_check.sh: ${total}s in all, $failures step(s) failed or not run; results in $out"; } | tee -a "$log"
column -t -s "$(printf '\t')" "$summary" 2>/dev/null || cat "$summary"
[ -f "$out/bench_gpu.md" ] && sed -n '/^| row |/,/^$/p' "$out/bench_gpu.md"
rm -rf "$work"
[ "$failures" = 0 ]
