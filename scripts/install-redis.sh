#!/usr/bin/env bash
# Installs redis-server (Redis 7) when it is missing: the cluster's tests, `simulate live
# --spawn-cluster` and a local cluster start their own on a free port. Debian/Ubuntu
# (apt-get, as root) or macOS (Homebrew); anything else is told what to install.
set -euo pipefail
if command -v redis-server >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      echo "install-redis: redis-server is missing; run as root: apt-get install -y redis-server" >&2
      exit 1
    fi
  else SUDO=
  fi
  echo "install-redis: installing redis-server with apt-get" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2 ||
    { $SUDO apt-get update -q >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2; }
  # The package may start a system-wide Redis on 6379; ours run on free ports, so it
  # is left alone rather than stopped behind the user's back.
  exit 0
fi
if command -v brew >/dev/null; then
  brew install redis >&2
  exit 0
fi
echo "install-redis: redis-server is missing and neither apt-get nor brew is here; install Redis 7 (https://redis.io/docs/latest/operate/oss_and_stack/install/)" >&2
exit 1
