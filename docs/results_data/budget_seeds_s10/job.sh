#!/usr/bin/env bash
# job.sh NAME MODEL SEED ITERS [extra --set args...]: README recipe, fixed ITERS, 1 thread; then test eval.
set -u
name=$1 model=$2 seed=$3 iters=$4; shift 4
cd "$(dirname "$0")/../../.." && . .venv/bin/activate  # the repository root
export OMP_NUM_THREADS=1 SEGKIT_DATA=${SEGKIT_DATA:-../shared/data}
wd=work_dirs/s10/$name
[ -e $wd/final ] && { echo "$name done already"; exit 0; }
start=$(date +%s)
segkit train ${CONFIG:-camvid/segformer-b0_10min} --no-progress --set model=$model train.seed=$seed schedule.time_budget=null \
  schedule.max_iters=$iters train.eval_interval=$iters train.threads=1 train.work_dir=$wd "$@" > work_dirs/s10/$name.train.log 2>&1
rc=$?
mid=$(date +%s)
segkit eval $wd/final --data $SEGKIT_DATA/camvid --split test --out $wd/test > work_dirs/s10/$name.test.log 2>&1
end=$(date +%s)
echo "{\"name\": \"$name\", \"model\": \"$model\", \"seed\": $seed, \"iters\": $iters, \"train_rc\": $rc, \"train_s\": $((mid-start)), \"eval_s\": $((end-mid)), \"load_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"extra\": \"$*\"}" >> work_dirs/s10/jobs.jsonl
