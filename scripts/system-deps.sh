#!/usr/bin/env bash
# Debian packages the tests use: curl (a real client), slowhttptest (slowloris),
# wrk (the load generator of bench/, which the bench smoke test runs) and
# redis-server (the chat's channel layer across workers; the tests start their own),
# nghttp2-client (h2load and nghttp: real HTTP/2 clients for the HTTP/2 tests),
# nginx (docs/django.md's nginx config in front of bivio; tests/e2e/test_nginx.py
# runs its own nginx on free ports with a temp prefix, never the system's service),
# systemd (systemd-socket-activate and systemd-analyze for tests/e2e/test_systemd.py;
# the tests run them directly, no systemd needs to be running),
# haproxy (docs/proxy.md's PROXY protocol config in front of bivio;
# tests/e2e/test_haproxy.py runs its own in the foreground on free ports),
# prometheus (docs/metrics.md's scrape config; tests/e2e/test_metrics.py runs its own
# server on a free port with a temp storage directory),
# valgrind and strace (bench/counts.py: instructions and system calls per request;
# tests/test_bench_counts.py runs it briefly),
# chromium (headless: tests/e2e/test_compare.py renders bivio compare's HTML report).
# Installed when missing and we are root; the tests that need them skip otherwise.
set -u
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v slowhttptest >/dev/null 2>&1 || need+=(slowhttptest)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v systemd-socket-activate >/dev/null 2>&1 || need+=(systemd)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} (not root or no apt-get): those tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null 2>&1; } \
  || echo "system-deps: could not install ${need[*]}: those tests will skip" >&2
exit 0
