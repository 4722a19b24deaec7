"""`python -m disal.healthcheck`: exit 0 if this container's backend answers /health (Docker HEALTHCHECK).

Sends the basic-auth credentials from the environment when they are set, so a protected backend is
still reported healthy.
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request


def check(port: str | None = None, timeout: float = 4.0) -> int:
    url = f"http://127.0.0.1:{port or os.environ.get('PORT', '9090')}/health"
    req = urllib.request.Request(url)
    user, pw = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    if user and pw:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return 0 if r.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(check())
