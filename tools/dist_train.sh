#!/usr/bin/env bash
# Multi-process training with torchrun: one process per GPU, or NUM_PROCS processes over gloo on a
# CPU-only machine (tools/train.py picks gloo and CPU DDP there).
#
#   tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py args, e.g. --work-dir DIR --resume]
#
# Several machines: run the same command on each, with the same MASTER_ADDR (node 0's address)
# and PORT, NNODES machines in all and NODE_RANK 0..NNODES-1:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh CONFIG 8   # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh CONFIG 8   # node 1
# The batch size in a config is per process: the total batch is NUM_PROCS x NNODES x batch_size.
# The interpreter is $PYTHON when set (as `make PYTHON=...` exports it), else python3 from PATH.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [tools/train.py args]" >&2
    exit 2
fi
CONFIG=$1
NUM_PROCS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python3}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NUM_PROCS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
