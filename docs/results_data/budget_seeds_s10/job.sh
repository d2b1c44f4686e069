#!/usr/bin/env bash
# job.sh NAME MODEL SEED ITERS [extra --set args...]: README recipe, fixed ITERS, 1 thread; then test eval.
set -u
name=$1 model=$2 seed=$3 iters=$4; shift 4
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 SEGKIT_DATA=/work/shared/data
wd=/work/runs/$name
[ -e $wd/final ] && { echo "$name done already"; exit 0; }
start=$(date +%s)
segkit train ${CONFIG:-camvid/segformer-b0_10min} --no-progress --set model=$model train.seed=$seed schedule.time_budget=null \
  schedule.max_iters=$iters train.eval_interval=$iters train.threads=1 train.work_dir=$wd "$@" > /work/runs/$name.train.log 2>&1
rc=$?
mid=$(date +%s)
segkit eval $wd/final --data /work/shared/data/camvid --split test --out $wd/test > /work/runs/$name.test.log 2>&1
end=$(date +%s)
echo "{\"name\": \"$name\", \"model\": \"$model\", \"seed\": $seed, \"iters\": $iters, \"train_rc\": $rc, \"train_s\": $((mid-start)), \"eval_s\": $((end-mid)), \"load_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"extra\": \"$*\"}" >> /work/runs/jobs.jsonl
