#!/usr/bin/env python3
"""Bytes per idle proxied TCP connection through the L4 plane.

Starts `nodeway echo` as the endpoint and `nodeway run` with one Service in
front of it, opens N keep-alive connections through the Service (one request
each, then idle), and prints the RSS growth per connection and the
descriptor count. Loopback (127.0.77.x) only. Needs a release build.

  bench/scale/idle.py [N]      (default 2000)
"""

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

from run import ADMIN, BIN, ready, rss_mb

FRONT = ("127.0.77.10", 8080)
ENDPOINT = "127.0.77.20:18080"
MANIFEST = """apiVersion: v1
kind: Service
metadata: {name: idle, namespace: default}
spec:
  clusterIP: 127.0.77.10
  ports: [{name: p, port: 8080, targetPort: 18080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: idle-1, namespace: default, labels: {kubernetes.io/service-name: idle}}
addressType: IPv4
ports: [{name: p, port: 18080}]
endpoints:
- addresses: [127.0.77.20]
"""


def hello(s):
    s.sendall(b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n")
    return s.recv(200)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    if not os.access(BIN, os.X_OK):
        sys.exit("build first: cargo build --release")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    folder = tempfile.mkdtemp(prefix="nodeway-idle-")
    with open(os.path.join(folder, "svc.yaml"), "w") as f:
        f.write(MANIFEST)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    echo = subprocess.Popen([BIN, "echo", "--listen", ENDPOINT, "--name", "e"], **quiet)
    nw = subprocess.Popen(
        [BIN, "run", "--config", folder, "--dns-listen", "127.0.0.1:25354",
         "--dns-upstream", "127.0.0.1:9", "--http-listen", "127.0.0.1:28081",
         "--https-listen", "127.0.0.1:28444", "--admin-listen", ADMIN],
        env=dict(os.environ, NODEWAY_LOG="warn"), **quiet,
    )
    conns = []
    try:
        start = time.monotonic()
        while not ready(ADMIN):
            if time.monotonic() - start > 30:
                sys.exit("nodeway not ready after 30 s")
            time.sleep(0.05)
        # Warm up: the first connections allocate pools and buffers.
        warm = [socket.create_connection(FRONT, timeout=5) for _ in range(50)]
        for s in warm:
            hello(s)
        conns.extend(warm)
        time.sleep(1)
        before = rss_mb(nw.pid)
        for _ in range(n):
            s = socket.create_connection(FRONT, timeout=5)
            hello(s)
            conns.append(s)
        time.sleep(2)
        grown = (rss_mb(nw.pid) - before) * 2**20
        fds = len(os.listdir(f"/proc/{nw.pid}/fd"))
        print(
            f"{n} idle proxied connections: RSS +{grown / 2**20:.1f} MiB, "
            f"{grown / n:.0f} bytes per connection; nodeway holds {fds} descriptors"
        )
    finally:
        for s in conns:
            s.close()
        for p in (nw, echo):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
