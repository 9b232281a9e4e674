"""Helpers the Python benchmarks share: reading a process's RSS and
asking nodeway's admin listener whether it is ready."""

import urllib.request


def rss_mb(pid):
    """VmRSS of `pid` in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def ready(admin):
    """Whether nodeway's `/readyz` at `admin` (host:port) answers 200."""
    try:
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False
