"""bench/load.py against N callscribe nodes behind nginx, on this machine.

    python bench/cluster.py [--nodes 2] [--redis-url URL] [--database-url URL] -- [bench/load.py arguments]

Starts a throwaway redis-server and PostgreSQL (unless their URLs are given), N `callscribe serve`
nodes sharing them (CALLSCRIBE_PUBLIC_URL of node i is http://127.0.0.1:<nginx port>/n<i>), and nginx
in front (WebSocket upgrade, `/n<i>/` to node i, everything else round robin, as docs/cluster.md
shows), then runs bench/load.py with --url pointing at nginx. On one machine the nodes share its
CPU, so the figures say whether anything is lost or misrouted across nodes (missed, refused, errors),
not how throughput scales. Server CPU/RSS columns are empty (several processes); /metrics counts
reported by load.py are those of whichever node nginx asked. Needs nginx and redis-server (Debian
packages of those names) and, without --database-url, the postgresql package.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402 (bench/load.py, beside this file)

API_KEY = load.API_KEY
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;
  uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream callscribe_any {{ {servers} }}
  server {{
    listen 127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header Host $host;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
    proxy_buffering off;
    {locations}
    location / {{ proxy_pass http://callscribe_any; }}
  }}
}}
"""


def free_port() -> int:
    return load.free_port()


def start_redis(root: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(root)], stdout=subprocess.DEVNULL)
    return f"redis://127.0.0.1:{port}/0", proc


def start_postgres(root: Path) -> tuple[str, list[str]]:
    """A throwaway cluster (as scripts/test.sh makes one); returns its URL and the stop command."""
    bin_dir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = root / "pg"
    data.mkdir()
    if as_pg:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data / "d"), "-U", "callscribe", "-A", "trust"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data / "d"), "-l", str(data / "log"), "-w", "-o",
                    f"-k {data} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off -c max_connections=200",
                    "start"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*as_pg, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "callscribe",
                    "callscribe"], check=True)
    return (f"postgresql+psycopg://callscribe@127.0.0.1:{port}/callscribe",
            [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data / "d"), "-m", "fast", "stop"])


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/cluster.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--redis-url")
    p.add_argument("--database-url")
    p.add_argument("load_args", nargs=argparse.REMAINDER, help="after --: arguments for bench/load.py")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="callscribe-cluster-bench-"))
    os.chmod(root, 0o755)
    cleanup: list = []
    procs: list[subprocess.Popen] = []
    try:
        redis_url = args.redis_url
        if not redis_url:
            redis_url, proc = start_redis(root)
            procs.append(proc)
        database_url = args.database_url
        if not database_url:
            database_url, stop = start_postgres(root)
            cleanup.append(stop)
        nginx_port = free_port()
        nodes = []
        for i in range(1, args.nodes + 1):
            port = free_port()
            data = root / f"n{i}"
            data.mkdir()
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("CALLSCRIBE_")},
                   "CALLSCRIBE_DATA_DIR": str(data), "CALLSCRIBE_HOST": "127.0.0.1", "CALLSCRIBE_PORT": str(port),
                   "CALLSCRIBE_SIP_PORT": "0", "CALLSCRIBE_API_KEYS": ":".join(API_KEY),
                   "CALLSCRIBE_REDIS_URL": redis_url, "CALLSCRIBE_DATABASE_URL": database_url,
                   "CALLSCRIBE_NODE_ID": f"n{i}", "CALLSCRIBE_PUBLIC_URL": f"http://127.0.0.1:{nginx_port}/n{i}"}
            log = (data / "serve.log").open("w")
            procs.append(subprocess.Popen([sys.executable, "-m", "callscribe", "serve"], env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
            nodes.append(port)
            if i == 1:  # the first node migrates the database; the others start after it
                _wait_ready(f"http://127.0.0.1:{port}", procs[-1])
        for port, proc in zip(nodes[1:], procs[-len(nodes) + 1:]):
            _wait_ready(f"http://127.0.0.1:{port}", proc)
        conf = NGINX_CONF.format(
            root=root, port=nginx_port, servers=" ".join(f"server 127.0.0.1:{n};" for n in nodes),
            locations="\n    ".join(f"location /n{i}/ {{ proxy_pass http://127.0.0.1:{n}/; }}"
                                    for i, n in enumerate(nodes, 1)))
        (root / "nginx.conf").write_text(conf)
        procs.append(subprocess.Popen(["nginx", "-c", str(root / "nginx.conf"), "-p", str(root)]))
        _wait_ready(f"http://127.0.0.1:{nginx_port}", procs[-1])
        print(f"{args.nodes} nodes behind nginx at http://127.0.0.1:{nginx_port} (logs in {root})", file=sys.stderr)
        load_args = [a for a in args.load_args if a != "--"]
        return load.main(["--url", f"http://127.0.0.1:{nginx_port}", *load_args])
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for cmd in cleanup:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not get ready")


if __name__ == "__main__":
    sys.exit(main())
