#!/bin/bash
# Holds one connection to the old side, opened before tracer starts (tracer finds it in its
# census of open sockets), with bash builtins only so no other process shares it: one kept-alive
# request, then it waits on the open connection for up to HOLD seconds and exits.
#
# usage: census-holder.sh ADDR PORT HOLD_S LOG
set -u
addr=$1 port=$2 hold=$3 log=$4
exec 3<>"/dev/tcp/$addr/$port"
printf 'GET / HTTP/1.1\r\nHost: svc\r\nUser-Agent: census-holder\r\n\r\n' >&3
t=${EPOCHREALTIME/[.,]/}
echo "ms=$((t / 1000)) pid=$$ open=$addr:$port" >>"$log"
while IFS=$'\r' read -r -t "$hold" -u 3 line; do
    echo "got=$line" >>"$log"
done
t=${EPOCHREALTIME/[.,]/}
echo "ms=$((t / 1000)) pid=$$ closed" >>"$log"
