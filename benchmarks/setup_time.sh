#!/bin/bash
# Set-up time (benchmarks/RESULTS.md, "Set-up time"): the README's two commands from a fresh clone of
# this checkout's HEAD, in a fresh venv (no system site-packages).  Run it on a quiet machine:
#     benchmarks/setup_time.sh
# Dependencies come from pip's configured indexes (on the project VM a local wheel index).
set -e
repo=$(cd "$(dirname "$0")/.." && pwd)
rm -rf /tmp/st-clone /tmp/st-venv
git clone -q "$repo" /tmp/st-clone
python -m venv /tmp/st-venv
source /tmp/st-venv/bin/activate
cd /tmp/st-clone
uptime
t0=$(date +%s.%N)
pip install . -q 2>&1 | grep -v -i warning || true
t1=$(date +%s.%N)
python -m tensorjac | tail -1
t2=$(date +%s.%N)
pip install ".[test]" -q 2>&1 | grep -v -i warning || true
t3=$(date +%s.%N)
echo "pip install . : $(echo "$t1-$t0" | bc) s"
echo "python -m tensorjac : $(echo "$t2-$t1" | bc) s"
echo "pip install .[test] : $(echo "$t3-$t2" | bc) s"
echo "both install commands (without the test run): $(echo "$t3-$t0" | bc) s"
t4=$(date +%s.%N)
python -m pytest -q -p no:cacheprovider 2>&1 | tail -1
t5=$(date +%s.%N)
echo "python -m pytest : $(echo "$t5-$t4" | bc) s"
uptime
