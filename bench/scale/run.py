#!/usr/bin/env python3
"""Scale benchmark: a big cluster in a folder, one object changed at a time.

For each N (default 1000 and 10000) it generates
  - N ClusterIP Services with 2 ports each, and N EndpointSlices with 10
    ready endpoints each (bulk files of 500 objects);
  - 200 headless Services with 20 hostnames each;
  - N/10 Ingresses with 5 Prefix paths each;
then runs `nodeway run` on the folder and prints: time to ready, RSS and
open file descriptors when ready, and for each kind of change the time from the file write (an atomic
rename, as editors and ConfigMap volumes do) until a client sees it:
  endpoint   one address of a headless Service's slice changed (DNS)
  path       one Ingress path added (L7 stops answering 404)
  service    one Service added (DNS A record appears)
  replace    all endpoints of one headless Service replaced (DNS)
Each change is repeated ROUNDS times (default 7); the median is printed.

  bench/scale/run.py [--n 1000 --n 10000] [--rounds 7] [--l4]

L4 is off unless --l4 is given (then every Service port is a listener).
Traffic goes to 127.0.0.0/8 only. Needs a release build. Not run by CI.
"""

import argparse
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import ready, rss_mb  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("NODEWAY_BIN", os.path.join(ROOT, "target/release/nodeway"))
DNS = ("127.0.0.1", 25353)
HTTP = ("127.0.0.1", 28080)
ADMIN = "127.0.0.1:29090"
HEADLESS = 200
# Seconds idle after the changes before RSS is read again.
SETTLE = 10
PER_FILE = 500


def cluster_ip(i):
    return f"127.{10 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


def endpoint_ip(i, e):
    return f"127.{100 + e}.{(i // 250) % 250}.{i % 250 + 1}"


def service(i):
    return (
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{i % 50}}}\n"
        f"spec:\n  clusterIP: {cluster_ip(i)}\n"
        f"  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n"
        f"  - {{name: metrics, port: 9090, targetPort: 9090}}\n"
    )


def slice_(i, addrs, name=None, svc=None, hostnames=False, ns=None):
    ns = ns or f"ns-{i % 50}"
    svc = svc or f"svc-{i}"
    name = name or f"{svc}-x"
    out = [
        f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: metrics, port: 9090}}]\nendpoints:\n"
    ]
    for k, a in enumerate(addrs):
        host = f", hostname: {svc}-{k}" if hostnames else ""
        out.append(f"- {{addresses: [{a}]{host}}}\n")
    return "".join(out)


def headless(h, addrs):
    svc = f"hl-{h}"
    return (
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: stateful}}\n"
        f"spec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        + slice_(0, addrs, svc=svc, hostnames=True, ns="stateful")
    )


def ingress(j, paths, n):
    lines = [
        f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n"
        f"metadata: {{name: ing-{j}, namespace: ns-{j % 50}}}\n"
        f"spec:\n  rules:\n  - host: h{j}.example\n    http:\n      paths:\n"
    ]
    for p in paths:
        # A Service of the Ingress's own namespace.
        svc = (j % 50) + 50 * ((j * 7 + len(p)) % (n // 50))
        lines.append(
            f"      - {{path: {p}, pathType: Prefix, backend: {{service: {{name: svc-{svc}, port: {{number: 80}}}}}}}}\n"
        )
    return "".join(lines)


def headless_addrs(h, gen):
    return [f"127.{200 + gen % 50}.{h % 250}.{k + 1}" for k in range(20)]


def write(path, text):
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def generate(folder, n):
    for start in range(0, n, PER_FILE):
        r = range(start, min(n, start + PER_FILE))
        write(os.path.join(folder, f"services-{start:05}.yaml"), "".join(service(i) for i in r))
        write(
            os.path.join(folder, f"slices-{start:05}.yaml"),
            "".join(slice_(i, [endpoint_ip(i, e) for e in range(10)]) for i in r),
        )
    for h in range(HEADLESS):
        write(os.path.join(folder, f"headless-{h:03}.yaml"), headless(h, headless_addrs(h, 0)))
    ings = n // 10
    for start in range(0, ings, PER_FILE):
        r = range(start, min(ings, start + PER_FILE))
        write(
            os.path.join(folder, f"ingress-{start:05}.yaml"),
            "".join(ingress(j, [f"/p{k}" for k in range(5)], n) for j in r),
        )
    # The Ingress the path changes go to, alone in its file.
    write(os.path.join(folder, "ingress-hot.yaml"), ingress(ings, [f"/p{k}" for k in range(5)], n))


def dns_query(name, qtype=1):
    qid = random.randint(0, 65535)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(q, DNS)
        resp = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    return resp


def a_records(name):
    """The A addresses of an answer, as a set (None on no answer)."""
    r = dns_query(name)
    if r is None or len(r) < 12:
        return None
    an = struct.unpack(">H", r[6:8])[0]
    i = 12
    while r[i] != 0:  # skip the question name
        i += r[i] + 1
    i += 5
    out = set()
    for _ in range(an):
        if r[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while r[i] != 0:
                i += r[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[i : i + 10])
        i += 10
        if rtype == 1:
            out.add(socket.inet_ntoa(r[i : i + rdlen]))
        i += rdlen
    return out


def http_status(host, path):
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection(HTTP, timeout=2) as s:
            s.sendall(req)
            head = s.recv(64)
        return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_for(cond, deadline_s=60):
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if cond():
            return time.monotonic() - start
        time.sleep(0.002)
    raise RuntimeError("change not seen within the deadline")




def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))




def measure(n, rounds, l4):
    folder = tempfile.mkdtemp(prefix=f"nodeway-scale-{n}-")
    try:
        generate(folder, n)
        zone = "cluster.local"
        args = [
            BIN, "run", "--config", folder,
            "--dns-listen", f"{DNS[0]}:{DNS[1]}", "--dns-upstream", "127.0.0.1:9",
            "--http-listen", f"{HTTP[0]}:{HTTP[1]}", "--https-listen", "127.0.0.1:28443",
            "--admin-listen", ADMIN,
        ]
        if not l4:
            args.append("--l4-disable")
        env = dict(os.environ, NODEWAY_LOG="warn")
        t0 = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while not ready(ADMIN):
                if proc.poll() is not None:
                    raise RuntimeError(f"nodeway exited: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() - t0 > 300:
                    raise RuntimeError("not ready after 300 s")
                time.sleep(0.01)
            t_ready = time.monotonic() - t0
            time.sleep(1)
            rss = rss_mb(proc.pid)
            fds = open_fds(proc.pid)
            res = {"endpoint": [], "path": [], "service": [], "replace": []}
            ings = n // 10
            for r in range(rounds):
                h = r % HEADLESS
                name = f"hl-{h}.stateful.svc.{zone}"
                # One address of one headless slice changed.
                addrs = headless_addrs(h, 0)
                addrs[0] = f"127.199.{h % 250}.{r + 1}"
                write(os.path.join(folder, f"headless-{h:03}.yaml"), headless(h, addrs))
                res["endpoint"].append(wait_for(lambda: (a_records(name) or set()) == set(addrs)))
                # All endpoints of it replaced.
                new = headless_addrs(h, r + 1)
                write(os.path.join(folder, f"headless-{h:03}.yaml"), headless(h, new))
                res["replace"].append(wait_for(lambda: (a_records(name) or set()) == set(new)))
                # One Ingress path added.
                paths = [f"/p{k}" for k in range(5)] + [f"/added-{r}"]
                write(os.path.join(folder, "ingress-hot.yaml"), ingress(ings, paths, n))
                res["path"].append(
                    wait_for(lambda: http_status(f"h{ings}.example", f"/added-{r}") not in (None, 404))
                )
                # One Service added.
                i = n + r
                write(os.path.join(folder, f"added-{r}.yaml"), service(i))
                svc = f"svc-{i}.ns-{i % 50}.svc.{zone}"
                res["service"].append(wait_for(lambda: a_records(svc) == {cluster_ip(i)}))
            rss_after = rss_mb(proc.pid)
            # What it settles at once idle (the allocator returns pages lazily).
            time.sleep(SETTLE)
            rss_settled = rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        return t_ready, rss, rss_after, rss_settled, fds, {k: statistics.median(v) for k, v in res.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, action="append")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--l4", action="store_true")
    a = p.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit("build first: cargo build --release")
    ns = a.n or [1000, 10000]
    rows = {}
    for n in ns:
        rows[n] = measure(n, a.rounds, a.l4)
        t_ready, rss, rss_after, rss_settled, fds, med = rows[n]
        print(
            f"N={n:>6} l4={'on' if a.l4 else 'off'}: ready {t_ready:.2f} s, RSS {rss:.0f} MB "
            f"(after changes {rss_after:.0f} MB, {SETTLE} s later {rss_settled:.0f} MB), "
            f"{fds} open fds; change to live (median of {a.rounds}): "
            + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in med.items()),
            flush=True,
        )
    if len(ns) == 2:
        lo, hi = rows[ns[0]][5], rows[ns[1]][5]
        print("ratio N=%d / N=%d: " % (ns[1], ns[0]) + ", ".join(f"{k} {hi[k] / lo[k]:.2f}x" for k in lo))


if __name__ == "__main__":
    main()
