# Helpers shared by the benchmark scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to two minutes for http://127.0.0.1:$1/health to answer; otherwise prints the last
# lines of the server's log $2 and fails.
wait_healthy() {
    for _ in $(seq 1 240); do
        curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "the server on port $1 did not start; its log:" >&2
    tail -20 "$2" >&2
    return 1
}
