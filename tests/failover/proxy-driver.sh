#!/bin/bash
# Drives the nginx proxy at a low steady rate: one request at a time (a new client connection
# each, through bash's /dev/tcp, no child process), so nginx reuses one kept-alive upstream
# connection. One request every EVERY seconds until DEADLINE (epoch ms) or MAX requests. Per
# request one log line: when it started and the side that answered.
#
# usage: proxy-driver.sh HOST PORT DEADLINE_MS MAX EVERY_S LOG
set -u
host=$1 port=$2 deadline=$3 max=$4 every=$5 log=$6
for ((i = 0; i < max; i++)); do
    t=${EPOCHREALTIME/[.,]/}
    t=$((t / 1000))
    ((t >= deadline)) && break
    served=-
    if exec 3<>"/dev/tcp/$host/$port"; then
        printf 'GET / HTTP/1.0\r\nHost: svc\r\nUser-Agent: proxy-driver\r\n\r\n' >&3
        while IFS=$'\r' read -r -t 2 -u 3 line; do
            served=$line
        done
        exec 3<&-
    fi
    echo "ms=$t pid=$$ served=$served" >>"$log"
    sleep "$every"
done
