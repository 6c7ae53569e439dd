#!/usr/bin/env bash
# The GPU benchmarks: every stage, the scaling figure included, on a CUDA GPU for JAX and
# then torch, on a machine that has those backends but not Keras (nor TensorFlow).
#
#   benchmarks/gpu.sh OUT [WHEELS]
#
# Run it from the repository root. Wheels in WHEELS (default .whl: keras and what it needs
# that the machine lacks, see docs/benchmarks.rst) are installed into a temp folder, and
# keras_extras is imported from this checkout's src/, so the code measured is the code
# beside this script. Writes OUT/gpu-<backend>.json and OUT/<backend>.log, then prints
# the ratios. Make the tables here afterwards: copy the JSON into benchmarks/results/
# and run `python -m benchmarks.report`.
#
# Each backend gets at most BENCH_SECONDS (default 215) so that the whole script fits a
# time-limited machine; the JSON is rewritten after every comparison, and the stages run
# cheapest-and-most-wanted first, so a backend cut short keeps what it measured.
# Environment: PYTHON (python3), BACKENDS ("jax torch"), DEVICE (gpu; cpu for a dry run),
# BENCH_ARGS (more arguments for benchmarks.run, e.g. --quick), BENCH_GIT_COMMIT (the
# commit, where the tree travels without .git).
set -u
out=${1:?usage: benchmarks/gpu.sh OUT [WHEELS]}
wheels=${2:-.whl}
python=${PYTHON:-python3}
mkdir -p "$out"

site=$(mktemp -d "${TMPDIR:-/tmp}/keras-extras-site.XXXXXX")
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "$wheels"/*.whl || exit 1
fi
export PYTHONPATH="$site:$PWD/src" PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL=2

status=0
for backend in ${BACKENDS:-jax torch}; do
  echo "=== $backend"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
  KERAS_BACKEND=$backend timeout -k 10 "${BENCH_SECONDS:-215}" "$python" -m benchmarks.run \
    --backend "$backend" --device "${DEVICE:-gpu}" --out "$out" ${BENCH_ARGS:-} \
    >"$out/$backend.log" 2>&1
  code=$?
  tail -n 4 "$out/$backend.log"
  if [ "$code" -ne 0 ]; then
    echo "=== $backend exited with $code (124: stopped at BENCH_SECONDS)"
    status=$code
  fi
done
"$python" -m benchmarks.report --results "$out" --summary
exit $status
