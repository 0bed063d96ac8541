#!/bin/sh
# A tour of queuectl on a throw-away queue: enqueue a few jobs (one of which fails into the dead
# letter queue), drain them with two workers, then look at the result. Needs `queuectl` on PATH
# (python -m pip install .). Your own queue is never touched.
set -eu

QUEUECTL_HOME="$(mktemp -d "${TMPDIR:-/tmp}/queuectl-demo.XXXXXX")"
export QUEUECTL_HOME
run() {  # show the command, quoted as you would type it, then run it
    printf '\n$'
    for arg in "$@"; do
        case $arg in *[!A-Za-z0-9_./:=-]*) printf " '%s'" "$arg" ;; *) printf ' %s' "$arg" ;; esac
    done
    printf '\n'
    "$@"
}

# Fail fast: one retry, 1.5 s after the first failure (backoff_base ** 1).
run queuectl config set max_retries 1
run queuectl config set backoff_base 1.5

run queuectl enqueue --id hello --cmd 'echo "Hello from $QUEUECTL_JOB_ID"'
run queuectl enqueue '{"id": "urgent", "command": "echo first in line", "priority": 10}'
run queuectl enqueue --id later --cmd 'date -u' --delay 1
printf '%s\n' '{"id": "batch-1", "command": "sleep 0.5; echo one"}' \
              '{"id": "batch-2", "command": "sleep 0.5; echo two"}' > "$QUEUECTL_HOME/jobs.jsonl"
run queuectl enqueue --file "$QUEUECTL_HOME/jobs.jsonl"
run queuectl enqueue --id broken --cmd 'echo "about to fail" >&2; exit 3'
run queuectl enqueue --id too-slow --cmd 'sleep 30' --timeout 1

# --burst: run everything, waiting for the delayed job and the retries, then exit.
run queuectl worker start --count 2 --burst

run queuectl status
run queuectl dlq list
run queuectl logs hello
run queuectl logs broken
run queuectl dlq retry broken
run queuectl list --state pending

printf '\nThe demo queue is in %s (QUEUECTL_HOME); delete it when done.\n' "$QUEUECTL_HOME"
