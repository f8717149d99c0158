#!/usr/bin/env bash
# Installs everything the tests need, starts a throwaway PostgreSQL, and runs the test suite.
# This is the README's test command and what CI runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: speech synthesis and conversion for test audio, ffmpeg for file decoding,
# PostgreSQL for the storage tests on a real server, SIPp as a real SIP peer, Redis for the cluster tests.
APT_PACKAGES="espeak-ng sox libsox-fmt-all ffmpeg postgresql chromium sip-tester redis-server"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "scripts/test.sh: installing Debian packages:$missing"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'

# pipecat for tests/test_listen_pipecat.py, in a venv of its own: pipecat-ai[deepgram] pins versions of
# packages (soxr, protobuf) the main environment must keep. Made once, kept while it has that version.
PIPECAT_VENV="$PWD/.venv-pipecat"
PIPECAT_REQ="pipecat-ai[deepgram]==1.14.0"
if ! "$PIPECAT_VENV/bin/python" -c 'import importlib.metadata as m, pipecat.services.deepgram.stt; assert m.version("pipecat-ai") == "1.14.0"' 2>/dev/null; then
  echo "scripts/test.sh: creating $PIPECAT_VENV ($PIPECAT_REQ)"
  "$PYTHON" -c 'import ensurepip' 2>/dev/null || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null; }
  rm -rf "$PIPECAT_VENV"
  "$PYTHON" -m venv "$PIPECAT_VENV"
  "$PIPECAT_VENV/bin/pip" install -q --disable-pip-version-check "$PIPECAT_REQ"
fi
export CALLSCRIBE_PIPECAT_PYTHON="$PIPECAT_VENV/bin/python"

# A PostgreSQL cluster of our own on a free loopback port, stopped when the tests end.
if [ -z "${CALLSCRIBE_TEST_PG_URL:-}" ]; then
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$PG_BIN" ]; then
    PG_DIR="$(mktemp -d /tmp/callscribe-pg.XXXXXX)"
    PG_PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
    run_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U callscribe -A trust >/dev/null
    run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
      -o "-k $PG_DIR -c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off" start >/dev/null
    trap 'run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
    run_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U callscribe callscribe_test
    export CALLSCRIBE_TEST_PG_URL="postgresql+psycopg://callscribe@127.0.0.1:$PG_PORT/callscribe_test"
    echo "scripts/test.sh: PostgreSQL on 127.0.0.1:$PG_PORT"
  fi
fi

# A Redis server of our own on a free loopback port, for the cluster tests (tests/test_cluster_*.py).
if [ -z "${CALLSCRIBE_TEST_REDIS_URL:-}" ] && command -v redis-server >/dev/null; then
  REDIS_DIR="$(mktemp -d /tmp/callscribe-redis.XXXXXX)"
  REDIS_PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$REDIS_DIR" \
    --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/log"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  stop_redis() { kill "$(cat "$REDIS_DIR/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$REDIS_DIR"; }
  # One EXIT trap for both servers: the PostgreSQL block above may have set its own.
  PG_TRAP="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
  trap "stop_redis; ${PG_TRAP:-true}" EXIT
  export CALLSCRIBE_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  echo "scripts/test.sh: Redis on 127.0.0.1:$REDIS_PORT"
fi

# Types first: the seams between the layers are typed and checked (config in pyproject.toml).
"$PYTHON" -m mypy

status=0
"$PYTHON" -m pytest "$@" || status=$?
exit $status
