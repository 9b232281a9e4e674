#!/usr/bin/env python3
"""Re-list memory: does a re-list of a big cluster double nodeway's RSS?

A stand-in API server on 127.0.0.1 (list and chunked watch, the real wire
shapes) holds N Services with 2 ports and N EndpointSlices of 10 endpoints
(the scale benchmark's cluster, default N = 10,000). `nodeway run
--kubeconfig` reads it; when ready, every watch gets a 410 Expired ERROR
event, so every kind is listed again at once (what an API server restart
does to every client). This repeats ROUNDS times. Printed: RSS when ready,
the peak RSS while re-listing (sampled every 5 ms), and RSS after each
round once the re-list is published.

  bench/api/relist.py [--n 10000] [--rounds 3] [--l4]

CoreDNS was OOM-killed this way in a 5,000-node test: a re-list that
builds the new picture next to the old one needs twice the memory.
Traffic stays on 127.0.0.1. Needs a release build. Not run by CI.
"""

import argparse
import http.server
import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import ready, rss_mb  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("NODEWAY_BIN", os.path.join(ROOT, "target/release/nodeway"))
ADMIN = "127.0.0.1:29190"

COLLECTIONS = {
    "/api/v1/namespaces": ("Namespace", "v1"),
    "/api/v1/services": ("Service", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io/v1"),
    "/apis/networking.k8s.io/v1/ingressclasses": ("IngressClass", "networking.k8s.io/v1"),
    "/apis/networking.k8s.io/v1/ingresses": ("Ingress", "networking.k8s.io/v1"),
    "/api/v1/secrets": ("Secret", "v1"),
}


def cluster_ip(i):
    return f"127.{10 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


def endpoint_ip(i, e):
    return f"127.{100 + e}.{(i // 250) % 250}.{i % 250 + 1}"


def managed_fields():
    # What a real object carries and the planes never read.
    return [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
             "time": "2026-12-04T00:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]


def items(n):
    out = {p: [] for p in COLLECTIONS}
    for k in range(50):
        out["/api/v1/namespaces"].append({"metadata": {"name": f"ns-{k}", "uid": f"ns-{k}"}})
    for i in range(n):
        ns = f"ns-{i % 50}"
        out["/api/v1/services"].append({
            "metadata": {"name": f"svc-{i}", "namespace": ns, "uid": f"s{i}",
                         "managedFields": managed_fields()},
            "spec": {"clusterIP": cluster_ip(i), "clusterIPs": [cluster_ip(i)], "type": "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]},
        })
        out["/apis/discovery.k8s.io/v1/endpointslices"].append({
            "metadata": {"name": f"svc-{i}-x", "namespace": ns, "uid": f"e{i}",
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"},
                         "managedFields": managed_fields()},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "metrics", "port": 9090, "protocol": "TCP"}],
            "endpoints": [{"addresses": [endpoint_ip(i, e)], "conditions": {"ready": True}}
                          for e in range(10)],
        })
    return out


class Api:
    def __init__(self, n):
        self.items = items(n)
        self.rv = 1000
        self.lock = threading.Lock()
        # Watch connections: path -> list of (handler, event) to end them.
        self.watches = []
        self.lists = 0

    def expire_all(self):
        """Sends every watch a 410 Expired ERROR and ends it."""
        with self.lock:
            watches, self.watches = self.watches, []
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "too old resource version", "reason": "Expired", "code": 410}
        for w in watches:
            w.put({"type": "ERROR", "object": status})
            w.put(None)


class Watch:
    def __init__(self):
        self.cv = threading.Condition()
        self.queue = []

    def put(self, ev):
        with self.cv:
            self.queue.append(ev)
            self.cv.notify()

    def get(self, timeout):
        with self.cv:
            if not self.queue:
                self.cv.wait(timeout)
            return self.queue.pop(0) if self.queue else "idle"


def handler(api):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path not in COLLECTIONS:
                self.send_error(404)
                return
            kind, version = COLLECTIONS[path]
            if "watch=true" in query or "watch=1" in query:
                self.watch()
                return
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            # Pages as the API server sends them (kube's watcher asks for 500).
            limit = int(params.get("limit", "0")) or None
            start = int(params.get("continue", "0") or 0)
            everything = api.items[path]
            page = everything[start:start + limit] if limit else everything[start:]
            meta = {"resourceVersion": str(api.rv)}
            if limit and start + limit < len(everything):
                meta["continue"] = str(start + limit)
            else:
                with api.lock:
                    api.lists += 1
            body = json.dumps({"kind": f"{kind}List", "apiVersion": version,
                               "metadata": meta, "items": page}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def watch(self):
            w = Watch()
            with api.lock:
                api.watches.append(w)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            deadline = time.monotonic() + 600
            try:
                while time.monotonic() < deadline:
                    ev = w.get(1.0)
                    if ev == "idle":
                        continue
                    if ev is None:
                        break
                    line = json.dumps(ev).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            self.close_connection = True

    return H


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True






def generation():
    with urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("nodeway_config_generation "):
                return int(float(line.split()[1]))
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--l4", action="store_true")
    a = p.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit("build first: cargo build --release")
    api = Api(a.n)
    srv = Server(("127.0.0.1", 0), handler(api))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as d:
        kc = os.path.join(d, "kubeconfig")
        with open(kc, "w") as f:
            f.write(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {server: "
                f"\"http://127.0.0.1:{srv.server_address[1]}\"}}\ncontexts:\n- name: b\n"
                "  context: {cluster: b, user: b}\ncurrent-context: b\nusers:\n- name: b\n  user: {}\n"
            )
        args = [BIN, "run", "--kubeconfig", kc, "--dns-listen", "127.0.0.1:25363",
                "--dns-upstream", "127.0.0.1:9", "--http-listen", "127.0.0.1:28180",
                "--https-listen", "127.0.0.1:28543", "--admin-listen", ADMIN]
        if not a.l4:
            args.append("--l4-disable")
        env = dict(os.environ, NODEWAY_LOG="warn")
        t0 = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while not ready(ADMIN):
                if proc.poll() is not None:
                    sys.exit(f"nodeway exited: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() - t0 > 300:
                    sys.exit("not ready after 300 s")
                time.sleep(0.02)
            print(f"N={a.n} l4={'on' if a.l4 else 'off'}: ready in {time.monotonic() - t0:.2f} s, "
                  f"RSS {rss_mb(proc.pid):.0f} MB", flush=True)
            time.sleep(1)
            base = rss_mb(proc.pid)
            print(f"  settled: RSS {base:.0f} MB", flush=True)
            for r in range(a.rounds):
                gen = generation()
                lists = api.lists
                api.expire_all()
                peak = 0.0
                start = time.monotonic()
                # Every kind listed again and the result published.
                while api.lists < lists + len(COLLECTIONS) or generation() <= gen:
                    peak = max(peak, rss_mb(proc.pid))
                    if time.monotonic() - start > 120:
                        sys.exit("re-list not published within 120 s")
                    time.sleep(0.005)
                took = time.monotonic() - start
                time.sleep(1)
                after = rss_mb(proc.pid)
                print(f"  re-list {r + 1}: published in {took:.2f} s, peak RSS {peak:.0f} MB "
                      f"({peak / base:.2f}x settled), after {after:.0f} MB", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            srv.shutdown()


if __name__ == "__main__":
    main()
