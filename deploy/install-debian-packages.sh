#!/usr/bin/env bash
# Installs those of the named Debian packages whose command is missing (each package here
# provides a command of its own name: chromium, redis-server, haproxy, wrk). The one place that
# runs apt for the CI (.ci/run) and the Makefile's cluster-demo and bench-tools.
# Exits non-zero, naming the packages, when some stay missing; callers decide whether that is
# fatal (the CI goes on and the tests that need them skip, saying so).
set -euo pipefail
missing=()
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  # Debian starts redis-server as a service on install; our tests start their own on free ports.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    && exit 0
fi
echo "could not install ${missing[*]} (Debian packages; apt-get install ${missing[*]})" >&2
exit 1
