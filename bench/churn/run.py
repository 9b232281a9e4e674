#!/usr/bin/env python3
"""Changes under load: manifests rewritten while traffic flows.

wrk drives L7 (plain HTTP and HTTPS) at a route that always exists, and a
TCP load of keep-alive HTTP requests runs through a ClusterIP, while the
manifests are rewritten REWRITES times (default 100), cycling through:
  - an endpoint removed from the Service, then added back;
  - an Ingress path added, its backend changed, then removed;
  - the TLS Secret rotated (a new certificate and key).
Pass: 0 failed HTTP requests (wrk errors and non-2xx) and 0 reset or
failed TCP requests (no endpoint is killed: removed endpoints keep their
established connections, as with kube-proxy). It prints p50/p99 of a
steady run against the run during the churn.

  bench/churn/run.py [--rewrites 100] [--steady 10]

Needs a release build, wrk and openssl (installed with apt-get when
missing). Traffic goes to 127.0.0.0/8 only. Not run by CI.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import ready  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("NODEWAY_BIN", os.path.join(ROOT, "target/release/nodeway"))
HTTP, HTTPS, ADMIN = "127.0.61.1:28180", "127.0.61.1:28543", "127.0.61.1:29190"
CLUSTER_IP = "127.0.61.10"
BACKENDS = [f"127.0.61.{20 + i}" for i in range(4)]
BACKEND_PORT = 18080
HOST = "churn.test"


def need(cmd, pkg):
    if shutil.which(cmd):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", pkg], check=True, stdout=subprocess.DEVNULL)


def write(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def cert(work, n):
    key, crt = os.path.join(work, f"k{n}.pem"), os.path.join(work, f"c{n}.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST}", "-keyout", key, "-out", crt],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import base64
    return tuple(base64.b64encode(open(p, "rb").read()).decode() for p in (crt, key))


def service(endpoints):
    eps = "".join(f"- {{addresses: [{ip}], conditions: {{ready: true}}}}\n" for ip in endpoints)
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n"
        f"spec: {{clusterIP: {CLUSTER_IP}, ports: [{{name: http, port: 80, targetPort: {BACKEND_PORT}}}]}}\n"
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: alt, namespace: default}}\n"
        f"spec: {{clusterIP: 127.0.61.11, ports: [{{name: http, port: 80, targetPort: {BACKEND_PORT}}}]}}\n"
        f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: {BACKEND_PORT}}}]\nendpoints:\n{eps}"
        f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: alt-1, namespace: default, labels: {{kubernetes.io/service-name: alt}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: {BACKEND_PORT}}}]\n"
        f"endpoints: [{{addresses: [{BACKENDS[0]}]}}]\n"
    )


def ingress(extra):
    paths = "      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n"
    if extra:
        path, svc = extra
        paths += f"      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
    return (
        f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: default}}\n"
        f"spec:\n  tls: [{{hosts: [{HOST}], secretName: web-tls}}]\n"
        f"  rules:\n  - host: {HOST}\n    http:\n      paths:\n{paths}"
    )


def secret(pair):
    crt, key = pair
    return (
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: web-tls, namespace: default}}\n"
        f"type: kubernetes.io/tls\ndata: {{tls.crt: {crt}, tls.key: {key}}}\n"
    )




class TcpLoad:
    """Keep-alive HTTP requests over raw TCP through the ClusterIP."""

    def __init__(self, conns):
        self.ok = self.failed = 0
        self.stop = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(conns)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self):
        req = b"GET /hostname HTTP/1.1\r\nHost: web\r\n\r\n"
        s = None
        while not self.stop:
            try:
                if s is None:
                    s = socket.create_connection((CLUSTER_IP, 80), timeout=5)
                s.sendall(req)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(body) < length:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    body += chunk
                with self.lock:
                    self.ok += 1
            except (OSError, ConnectionError, AttributeError):
                with self.lock:
                    self.failed += 1
                if s:
                    s.close()
                s = None
                time.sleep(0.01)
        if s:
            s.close()

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(10)
        return self.ok, self.failed


def wrk(url, secs):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{secs}s", "--latency", "-H", f"Host: {HOST}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return {"p50": lat(50), "p99": lat(99), "requests": reqs, "errors": errs + non2xx}


def churn(folder, work, rewrites, certs):
    step = 0
    for i in range(rewrites):
        kind = i % 5
        if kind == 0:
            write(os.path.join(folder, "web.yaml"), service(BACKENDS[:3]))  # endpoint removed
        elif kind == 1:
            write(os.path.join(folder, "web.yaml"), service(BACKENDS))  # and back
        elif kind == 2:
            write(os.path.join(folder, "ingress.yaml"), ingress((f"/extra-{i}", "web")))  # route added
        elif kind == 3:
            write(os.path.join(folder, "ingress.yaml"), ingress((f"/extra-{i - 1}", "alt")))  # changed
        else:
            write(os.path.join(folder, "ingress.yaml"), ingress(None))  # removed
            step += 1
            write(os.path.join(folder, "secret.yaml"), secret(certs[step % len(certs)]))  # rotated
        time.sleep(0.15)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rewrites", type=int, default=100)
    p.add_argument("--steady", type=int, default=10)
    a = p.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit("build first: cargo build --release")
    need("wrk", "wrk")
    need("openssl", "openssl")
    work = tempfile.mkdtemp(prefix="nodeway-churn-")
    folder = os.path.join(work, "manifests")
    os.mkdir(folder)
    procs = []
    try:
        certs = [cert(work, n) for n in range(3)]
        write(os.path.join(folder, "web.yaml"), service(BACKENDS))
        write(os.path.join(folder, "ingress.yaml"), ingress(None))
        write(os.path.join(folder, "secret.yaml"), secret(certs[0]))
        for i, ip in enumerate(BACKENDS):
            procs.append(subprocess.Popen(
                ["taskset", "-c", "1", BIN, "echo", "--listen", f"{ip}:{BACKEND_PORT}", "--name", f"e{i}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = dict(os.environ, NODEWAY_LOG="warn")
        nw = subprocess.Popen(
            ["taskset", "-c", "0", BIN, "run", "--config", folder, "--threads", "1",
             "--http-listen", HTTP, "--https-listen", HTTPS, "--admin-listen", ADMIN,
             "--dns-listen", "127.0.61.1:25354", "--dns-upstream", "127.0.0.1:9"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nodeway.log"), "w"))
        procs.append(nw)
        deadline = time.monotonic() + 30
        while not ready(ADMIN):
            if time.monotonic() > deadline or nw.poll() is not None:
                sys.exit("nodeway did not become ready:\n" + open(os.path.join(work, "nodeway.log")).read()[-2000:])
            time.sleep(0.05)

        tcp = TcpLoad(8)
        tcp.start()
        def both(secs, side=None):
            """Both wrk runs at once (and `side`, the churn, beside them)."""
            res = {}
            runs = [threading.Thread(target=lambda k=k, u=u: res.__setitem__(k, wrk(u, secs)))
                    for k, u in [("http", f"http://{HTTP}/"), ("https", f"https://{HTTPS}/")]]
            if side:
                runs.append(threading.Thread(target=side))
            for t in runs:
                t.start()
            for t in runs:
                t.join()
            return res
        steady = both(a.steady)
        during = both(int(a.rewrites * 0.15) + 1, lambda: churn(folder, work, a.rewrites, certs))
        ok, failed = tcp.finish()
        for k in ("http", "https"):
            s, d = steady[k], during[k]
            print(f"L7 {k:5}: steady p50 {s['p50']:.2f} ms p99 {s['p99']:.2f} ms ({s['requests']} req, "
                  f"{s['errors']} failed); churn p50 {d['p50']:.2f} ms p99 {d['p99']:.2f} ms "
                  f"({d['requests']} req, {d['errors']} failed); p99 ratio {d['p99'] / s['p99']:.2f}")
        print(f"L4 tcp  : {ok} requests through {CLUSTER_IP}:80, {failed} reset or failed")
        bad = during["http"]["errors"] + during["https"]["errors"] + steady["http"]["errors"] + steady["https"]["errors"] + failed
        print(f"{a.rewrites} rewrites: {'PASS' if bad == 0 else 'FAIL'}")
        sys.exit(0 if bad == 0 else 1)
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
