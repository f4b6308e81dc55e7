#!/usr/bin/env bash
# The whole GPU verification of issue 13 in one go, every result under $OUT:
#
#   bash benchmarks/gpu_verify.sh DATA_DIR                  # on a machine with an NVIDIA GPU and CuPy
#   bash benchmarks/gpu_verify.sh --cpu DATA_DIR            # dry run on NumPy, small settings: every
#                                                           # part but the CUDA calls (run it here first)
#   bash benchmarks/gpu_verify.sh --parts parity,pytest DATA_DIR    # only these parts (a rerun)
#
# DATA_DIR holds cifar-10-batches-py/ (on the GPU machine: .gpu_data, carried with the checkout).
# Run from the repository root; tinydense is used from the checkout (PYTHONPATH), nothing is installed,
# except the wheels in .whl/ if that folder exists (e.g. nbclient, nbformat and ipykernel for the
# notebook tests), into /tmp/site.
#
# Parts, in this order, each under `timeout` with its own budget (seconds, GPU run), all of them
# within TOTAL seconds (default 420; pytest gets what is left, at least 60):
#   env       nvidia-smi, versions, CuPy's configuration, the GPU tinydense sees           (30)
#   parity    benchmarks/gpu_parity.py: CPU vs GPU, float64 loss/gradients to 1e-10 for a small
#             DenseNet-BC in both memory_efficient modes, float32 training curve             (90)
#   bench     benchmarks/bench_gpu.py: DenseNet-BC L=100 and L=40 k=12 batch 64 step time against
#             PyTorch + cuDNN (alternating, ratio of medians), peak GPU memory of each        (90)
#   profile   benchmarks/gpu_profile.py: one L=100 step per op type, kernel launches,
#             host-device synchronisations (+ PyTorch profiler trace)                       (75)
#   train     tinydense train --device cuda, DenseNet-BC L=40 k=12, 3 epochs on DATA_DIR with
#             README's 30-epoch schedule (its CPU run's epochs 1-3 are printed beside)        (90)
#   evaluate  tinydense evaluate of that run's best.npz with --device cpu                     (40)
#   lesson10  lessons/source/11_gpu_cupy.py run as a script, full settings (not FAST; FAST in
#             the dry run)                                                                  (60)
#   pytest    the whole suite with every CUDA case; the notebook tests are deselected when
#             nbclient/nbformat/ipykernel do not import                                      (rest)
#
# $OUT (default benchmarks/results/gpu_verify, or gpu_verify-cpu) gets at most 8 flat files:
#   summary.txt (the headline of every part, its exit status and seconds), env.txt, pytest.log,
#   parity.log, bench.log, profile.log, train.log (train, evaluate and lesson 11) and
#   artifacts.tar.gz (the run directory, JSON results, junit XML, the profiler trace).
set -uo pipefail

mode=cuda parts=env,parity,bench,profile,train,evaluate,lesson10,pytest
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) mode=cpu; shift ;;
        --parts) parts="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
        *) break ;;
    esac
done
data="${1:?usage: bash benchmarks/gpu_verify.sh [--cpu] [--parts a,b] DATA_DIR (the directory holding cifar-10-batches-py/)}"
[ -d "$data/cifar-10-batches-py" ] || { echo "gpu_verify: $data/cifar-10-batches-py does not exist" >&2; exit 2; }
data="$(cd "$data" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${OUT:-benchmarks/results/gpu_verify$([ "$mode" = cpu ] && echo -cpu)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu_verify.XXXXXX")"
total="${TOTAL:-420}"
started=$SECONDS
py="${PYTHON:-python3}"

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg TINYDENSE_LESSONS_FAST=1 PYTHONUNBUFFERED=1
unset TINYDENSE_DATA        # pytest: the learning check on real images is a CPU test, skipped (and says so)
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site" || echo "gpu_verify: installing .whl/ failed" >&2
fi

if [ "$mode" = cpu ]; then     # small settings: the dry run takes a few minutes on two cores
    dev=cpu
    parity_args=(--device cpu --depth 10 --growth-rate 4 --batch 2 --steps 2 --curve-batch 4)
    bench_args=(--device cpu --depths 16 --batch 4 --pairs 2 --warmup 1)
    profile_args=(--device cpu --depth 16 --batch 4 --warmup 1 --repeat 2 --op-steps 1)
    train_args=(--depth 16 --epochs 1 --limit-train 128 --limit-test 64)
    pytest_args=(tests/test_gpu_scripts.py tests/test_cuda_cli.py)
else
    dev=cuda
    parity_args=(--device cuda)
    bench_args=(--device cuda --depths 100 40)
    profile_args=(--device cuda)
    train_args=(--depth 40 --epochs 3 --milestones 15 22)   # the first 3 epochs of README's 30-epoch CPU run
    pytest_args=(tests)
fi

summary="$out/summary.txt"
{ echo "gpu_verify ($mode) $(date -u +%FT%TZ), parts: $parts, budget ${total}s"; } > "$summary"
wanted() { case ",$parts," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# run NAME BUDGET LOG CMD...: CMD under timeout (SIGINT first, so Python and pytest print what they have),
# its output appended to LOG, its status and seconds to summary.txt
run() {
    local name="$1" budget="$2" log="$3"; shift 3
    local left=$(( total - (SECONDS - started) ))
    [ "$budget" -gt "$left" ] && budget=$left
    if [ "$budget" -lt 10 ]; then
        echo "$name: skipped, ${left}s of the ${total}s budget left" | tee -a "$summary" "$log"
        return 0
    fi
    echo "===== $name: $* (budget ${budget}s)" >> "$log"
    local t0=$SECONDS
    timeout -s INT -k 15 "$budget" "$@" >> "$log" 2>&1
    local rc=$?
    local how="exit $rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && how="TIMED OUT after ${budget}s"
    echo "$name: $how, $((SECONDS - t0)) s" | tee -a "$summary" >> "$log"
    return $rc
}

if wanted env; then
    {
        echo "date: $(date -u +%FT%TZ); host $(hostname); $(nproc) cores; $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GiB memory"}')"
        echo "checkout: $(git rev-parse HEAD 2>/dev/null || echo 'no git here')"
        command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
        "$py" -VV
        "$py" -m pip list 2>/dev/null | grep -iE '^(numpy|cupy|cupy-cuda[0-9x]+|torch|pytest|pytest-timeout|hypothesis|nbclient|nbformat|ipykernel|matplotlib|tqdm) ' || true
    } > "$out/env.txt" 2>&1
    run env 30 "$out/env.txt" "$py" -c "
import tinydense
print('tinydense.cuda.is_available():', tinydense.cuda.is_available())
print(tinydense.cuda.describe() if tinydense.cuda.is_available() else tinydense.cuda.unavailable_reason())
if tinydense.cuda.is_available():
    import cupy; cupy.show_config()"
    grep -E '^(GPU 0|tinydense.cuda)' "$out/env.txt" >> "$summary"
fi
if [ "$mode" = cuda ] && ! "$py" -c "import tinydense, sys; sys.exit(not tinydense.cuda.is_available())"; then
    echo "CUDA not available: $("$py" -c 'import tinydense; print(tinydense.cuda.unavailable_reason())' 2>&1)" | tee -a "$summary"
    echo "(every GPU part would fail; the dry run is: bash benchmarks/gpu_verify.sh --cpu DATA_DIR)" | tee -a "$summary"
    exit 1
fi

if wanted parity; then
    run parity 90 "$out/parity.log" "$py" benchmarks/gpu_parity.py "${parity_args[@]}" --data-dir "$data"
    grep -E 'PASS|FAIL|^[0-9]\.' "$out/parity.log" >> "$summary"
fi
if wanted bench; then
    run bench 90 "$out/bench.log" "$py" benchmarks/bench_gpu.py "${bench_args[@]}" --json "$work/bench.json"
    grep -E '^DenseNet|^  (tinydense|pytorch|peak)' "$out/bench.log" >> "$summary"
fi
if wanted profile; then
    run profile 75 "$out/profile.log" "$py" benchmarks/gpu_profile.py "${profile_args[@]}" \
        --json "$work/profile.json" --trace "$work/trace.json.gz"
    grep -E '^  (step|host-device|PyTorch)|^ +[0-9]+  [a-z]' "$out/profile.log" >> "$summary"
fi
if wanted train; then
    run train 90 "$out/train.log" "$py" -m tinydense train --model densenet-bc --growth-rate 12 "${train_args[@]}" \
        --device "$dev" --data-dir "$data" --out "$work/run" --no-progress --no-download
    grep -E '^(GPU|densenet|epoch|done)' "$out/train.log" >> "$summary"
    [ "$mode" = cuda ] && awk -F, 'NR > 1 && NR <= 4 { printf "  CPU run of README (same recipe, seed, data), epoch %d: train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%\n", $1, $2, 100 * $3, $4, 100 * $5 }' \
        docs/results/densenet-bc-L40-k12-cifar10-subset-metrics.csv >> "$summary"
fi
if wanted evaluate; then
    if [ -f "$work/run/best.npz" ]; then
        run evaluate 40 "$out/train.log" "$py" -m tinydense evaluate "$work/run/best.npz" --device cpu --data-dir "$data"
        grep -E 'best.npz:' "$out/train.log" | sed 's/^/evaluate on the CPU: /' >> "$summary"
    else
        echo "evaluate: skipped, the train part left no best.npz" | tee -a "$summary" >> "$out/train.log"
    fi
fi
if wanted lesson10; then    # the notebook's code as a script: magics dropped, full settings, the GPU cells run
    grep -v '^%' lessons/source/11_gpu_cupy.py > "$work/lesson10.py"
    run lesson10 60 "$out/train.log" env TINYDENSE_LESSONS_FAST="$([ "$mode" = cpu ] && echo 1 || echo 0)" \
        TINYDENSE_DATA="$data" "$py" "$work/lesson10.py"
    grep -E '^(GPU found|No CUDA|cpu:|cuda:|loss on the CPU|largest gradient)' "$out/train.log" | sed 's/^/lesson 11: /' >> "$summary"
fi
if wanted pytest; then
    deselect=()
    if ! why="$("$py" -c 'import nbclient, nbformat, ipykernel' 2>&1)"; then
        deselect=(--ignore=tests/test_lessons.py)
        echo "pytest: tests/test_lessons.py deselected: nbclient/nbformat/ipykernel do not import ($(echo "$why" | tail -1))" \
            | tee -a "$summary" > "$out/pytest.log"
    fi
    plugins=()
    "$py" -c 'import pytest_timeout' 2>/dev/null && plugins=(--timeout 120)
    left=$(( total - (SECONDS - started) ))
    [ $left -lt 60 ] && left=60 && total=$(( SECONDS - started + 60 ))
    run pytest "$left" "$out/pytest.log" "$py" -m pytest -v --tb=short -rfEs -p no:cacheprovider "${plugins[@]}" \
        --junitxml="$work/junit.xml" "${deselect[@]}" "${pytest_args[@]}"
    {
        grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$out/pytest.log" | tail -1
        counts=""
        for outcome in PASSED FAILED ERROR SKIPPED; do     # the cases of the `device` fixture: [cuda], [cuda-...]
            counts="$counts $(grep -cE "^tests/[^ ]*\[([^] ]*-)?cuda(-[^] ]*)?\] $outcome" "$out/pytest.log") $outcome"
        done
        echo "  device=cuda cases:$counts"
        echo "  skipped as 'CUDA not available' (0 where the GPU is used): $(grep -E '^SKIPPED \[[0-9]+\].*CUDA not available' \
            "$out/pytest.log" | sed -E 's/^SKIPPED \[([0-9]+)\].*/\1/' | awk '{ n += $1 } END { print n + 0 }')"
        grep -E '^(FAILED|ERROR) ' "$out/pytest.log" | sed 's/^/  /'
    } >> "$summary"
fi

( cd "$work" && tar -czf "$out/artifacts.tar.gz" $(ls -d run bench.json profile.json junit.xml trace.json.gz 2>/dev/null) ) 2>/dev/null \
    || echo "artifacts: nothing to pack" >> "$summary"
echo "total: $((SECONDS - started)) s; files in $out: $(cd "$out" && ls | tr '\n' ' ')" | tee -a "$summary"
rm -rf "$work"
