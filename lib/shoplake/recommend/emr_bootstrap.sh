#!/bin/bash
# EMR bootstrap action of shoplake's ALS job (every node, before Spark starts): install the pinned Python packages
# the job imports into the interpreter the step uses. Uploaded with the job by shoplake.recommend.emr, which passes
# the arguments: the Python (e.g. /usr/bin/python3), then pinned requirements (numpy==..., pandas==..., ...).
# boto3 is installed only when that Python lacks it (EMR images ship their own).
set -euo pipefail

python="${1:?usage: emr_bootstrap.sh PYTHON REQUIREMENT...}"
shift
wanted=()
for requirement in "$@"; do
  if [[ "$requirement" == boto3==* ]] && "$python" -c "import boto3" 2>/dev/null; then
    continue
  fi
  wanted+=("$requirement")
done
if ((${#wanted[@]})); then
  sudo "$python" -m pip install --quiet --no-cache-dir "${wanted[@]}"
fi
"$python" -c "import sys, numpy, pandas, pyarrow, boto3; print('shoplake job python', sys.version.split()[0], \
'numpy', numpy.__version__, 'pandas', pandas.__version__, 'pyarrow', pyarrow.__version__, 'boto3', boto3.__version__)"
