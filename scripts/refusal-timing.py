#!/usr/bin/env python3
"""Measures how long berth takes to refuse a wrong password, per kind of name.

An attacker who can tell a refusal for an existing account from one for an
unknown name learns which accounts exist. This sends wrong-password sign-ins to
a running berth, one at a time, for each kind of name given, and prints the
median and 90th percentile per kind. It asserts nothing: timings on a shared
machine are noisy, and the figures are for the operator or the closing note.

    scripts/refusal-timing.py --url http://127.0.0.1:5001 --service registry \\
        --local alice --disabled dave --federated kc-user --samples 200

Kinds: local (an existing local account), disabled (a disabled local account),
federated (a name known only to the identity provider or directory), unknown
(a fresh random name per sample). Each sample uses a fresh wrong password, and
the sign-in attempts come from rotating loopback addresses (127.0.1.x) so that
berth's guessing limits do not turn the measurement into 429s: pass
--limit-aware to keep to one address and see them instead.

Only loopback URLs are accepted: this is a measurement, not a load tool.
"""

import argparse
import base64
import http.client
import ipaddress
import os
import secrets
import statistics
import sys
import time
import urllib.parse


def sign_in(url, service, user, password, source):
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        parsed.hostname, parsed.port or 80, timeout=30, source_address=(source, 0)
    )
    query = urllib.parse.urlencode(
        {"service": service, "account": user, "scope": "repository:timing/probe:pull"}
    )
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    start = time.perf_counter()
    conn.request("GET", f"/token?{query}", headers={"Authorization": f"Basic {auth}"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    return response.status, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="berth's base URL (loopback only)")
    ap.add_argument("--service", default="registry")
    ap.add_argument("--local", help="an existing local account")
    ap.add_argument("--disabled", help="a disabled local account")
    ap.add_argument("--federated", help="a name only the identity provider or directory knows")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--limit-aware", action="store_true", help="send everything from 127.0.0.1")
    args = ap.parse_args()

    host = urllib.parse.urlsplit(args.url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        sys.exit(f"refusal-timing: {host} is not a loopback address")
    if not 1 <= args.samples <= 10_000:
        sys.exit("refusal-timing: --samples must be between 1 and 10000")

    kinds = [(k, v) for k, v in [("local", args.local), ("disabled", args.disabled), ("federated", args.federated)] if v]
    kinds.append(("unknown", None))
    results = {k: [] for k, _ in kinds}
    statuses = {k: {} for k, _ in kinds}
    n = 0
    # Interleave the kinds, so that drift on the machine touches all of them alike.
    for i in range(args.samples):
        for kind, name in kinds:
            user = name or f"nobody-{secrets.token_hex(6)}"
            source = "127.0.0.1" if args.limit_aware else f"127.0.1.{1 + n % 250}"
            n += 1
            status, elapsed = sign_in(args.url, args.service, user, "wrong-" + secrets.token_hex(8), source)
            statuses[kind][status] = statuses[kind].get(status, 0) + 1
            if status == 401:
                results[kind].append(elapsed)

    print(f"refusal timing against {args.url}, {args.samples} samples per kind (ms)")
    print(f"{'kind':<10} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}  statuses")
    for kind, _ in kinds:
        xs = sorted(results[kind])
        if not xs:
            print(f"{kind:<10} {'-':>8} {'-':>8} {'-':>8} {'-':>8}  {statuses[kind]}")
            continue
        p90 = xs[min(len(xs) - 1, int(len(xs) * 0.9))]
        print(
            f"{kind:<10} {statistics.median(xs) * 1000:8.1f} {p90 * 1000:8.1f} "
            f"{xs[0] * 1000:8.1f} {xs[-1] * 1000:8.1f}  {statuses[kind]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
