#!/bin/bash
# One curl process per request, resolving through the system resolver (glibc, the namespace's
# /etc/resolv.conf): each lookup asks the primary resolver again, so the clients move within
# the TTL. One request every EVERY seconds until DEADLINE (epoch ms) or MAX requests. Per
# request one log line: when it started, the curl's pid, the address curl connected to and the
# side that answered (the backend's body names its address).
#
# usage: curl-loop.sh URL DEADLINE_MS MAX EVERY_S LOG
set -u
url=$1 deadline=$2 max=$3 every=$4 log=$5
out=$log.body
for ((i = 0; i < max; i++)); do
    t=${EPOCHREALTIME/[.,]/}
    t=$((t / 1000))
    ((t >= deadline)) && break
    curl -s --max-time 2 -o "$out" -w '%{remote_ip}\n' "$url" >"$out.ip" &
    pid=$!
    wait "$pid"
    connected=- served=-
    read -r connected <"$out.ip" || true
    read -r served <"$out" || true
    echo "ms=$t pid=$pid connected=${connected:--} served=${served:--}" >>"$log"
    sleep "$every"
done
