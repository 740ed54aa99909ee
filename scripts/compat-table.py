#!/usr/bin/env python3
"""Renders berth's compatibility table from the end-to-end results.

The compatibility tests (tests/e2e/compat.rs, compat_clients*.rs) append one JSON
object per cell to target/compat-results.jsonl. This script turns that file into
the section of docs/compatibility.md between the markers

    <!-- compat-table:start -->
    <!-- compat-table:end -->

  compat-table.py                 print the section
  compat-table.py --write [FILE]  replace the section in FILE (docs/compatibility.md)
  compat-table.py --check [FILE]  exit 1 (with a diff) when FILE's section differs

`cargo test --test policy_cli docs` checks that the page keeps both markers
around a table; `scripts/test.sh` checks the table against the run (--check).

It refuses to render from an incomplete run (a missing cell would silently
drop a row), so run the whole matrix first: `cargo test --test e2e compat_`.
"""

import argparse
import difflib
import json
import os
import sys

START = "<!-- compat-table:start -->"
END = "<!-- compat-table:end -->"

ALGS = ["ES256", "RS256", "ES384", "PS256", "EdDSA"]
KEY_ROWS = [
    ("distribution 2.8", "rootcertbundle", "libtrust"),
    ("distribution 2.8", "rootcertbundle", "thumbprint"),
    ("distribution 2.8", "rootcertbundle", "x5c"),
    ("distribution 3.1", "rootcertbundle", "libtrust"),
    ("distribution 3.1", "rootcertbundle", "thumbprint"),
    ("distribution 3.1", "rootcertbundle", "x5c"),
    ("distribution 3.1", "jwks", "libtrust"),
    ("distribution 3.1", "jwks", "thumbprint"),
    ("distribution 3.1", "jwks", "x5c"),
]
AUD_ROWS = [
    ("distribution 2.8", "rootcertbundle", "libtrust + aud list"),
    ("distribution 3.1", "rootcertbundle", "thumbprint + aud list"),
]
ROTATION_ROWS = [
    ("distribution 2.8", "rootcertbundle", "x5c"),
    ("distribution 3.1", "rootcertbundle", "x5c"),
    ("distribution 3.1", "jwks", "thumbprint"),
]
CLIENTS = ["docker", "podman", "skopeo", "crane", "oras", "helm", "buildah", "ctr", "regctl", "cosign"]
REGISTRIES = ["distribution 2.8", "distribution 3.1"]


def load(path):
    cells = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except json.JSONDecodeError as err:
                sys.exit(f"{path}:{n}: not JSON: {err}")
            key = (e["table"], e["registry"], e["trust"], e["alg"], e["mode"], e["client"])
            cells[key] = e  # the last run of a cell wins
    return cells


def mark(e):
    if e is None:
        return None
    ok = "✓" if e["works"] else "✗"
    if e["works"] != e.get("expected", e["works"]):
        ok += " (unexpected)"
    return ok


def render(cells):
    missing = []

    def get(*key):
        e = cells.get(key)
        if e is None:
            missing.append(" / ".join(key))
        return e

    out = [START, "# Compatibility", ""]
    out.append(
        "Produced by `scripts/compat-table.py` from the end-to-end run "
        "(`tests/e2e/compat*.rs`); `scripts/test.sh` fails when this section and the run disagree. "
        "In short: for distribution 2.x use `key_id = \"libtrust\"` or `\"x5c\"` with ES256, "
        "ES384 or RS256; for 3.x any algorithm with `\"thumbprint\"` (bundle or JWKS file) or "
        "`\"x5c\"`. `x5c` lets keys rotate without touching any registry. "
        "Give berth's `public_url` and the registry a host name: crane refuses a realm "
        "that is a private IP literal, oras one that resolves to a private or loopback "
        "address unless its host name is the registry's. "
        "Per `[[service]]`: `key_id`, `audience_list = true` (`aud` as a JSON list) and "
        "`expand_wildcard = true` (a granted `*` also lists pull, push and delete). "
        "`berth registry-config --flavor distribution2|distribution3|zot [--service NAME]` prints "
        "the registry's block; when a registry still refuses berth's tokens, "
        "`berth doctor --registry URL -u USER` names the cause (realm, service, issuer, key, "
        "key header form, algorithm, clock skew)."
    )
    out.append("")
    out.append("## Identity sources")
    out.append("")
    out.append("Every source below signs in through `docker login` and gets tokens by the same policy; `auth_order` sets the order they are tried in.")
    out.append("")
    out.append("| source | configured by | `kind` in policy | tested against |")
    out.append("|---|---|---|---|")
    out.append("| local users | `berth user add` | `user` | SQLite and PostgreSQL |")
    out.append("| robot accounts | `berth robot create` | `robot` | SQLite and PostgreSQL |")
    out.append("| OpenID Connect | `[[oidc]]` | `federated` | Keycloak 26 |")
    out.append("| LDAP | `[[ldap]]` | `directory` | OpenLDAP 2.5 (slapd) over StartTLS and ldaps |")
    out.append("| Active Directory | `[[ldap]]` with `active_directory = true` | `directory` | an AD-style schema in OpenLDAP (`sAMAccountName`, `userAccountControl`, `accountExpires`), not a Windows domain controller |")
    out.append("")
    out.append("## Registries × signing keys")
    out.append("")
    out.append(
        "Each ✓ is skopeo logging in, pushing, pulling, being refused a push to another "
        "user's repository, an admin listing the catalog and a user deleting a manifest, "
        "all through berth. The header column is the service's `key_id`."
    )
    out.append("")
    out.append("| registry | trusts | header | " + " | ".join(ALGS) + " |")
    out.append("|---|---|---|" + "---|" * len(ALGS))
    for reg, trust, mode in KEY_ROWS + AUD_ROWS:
        algs = ALGS if (reg, trust, mode) in KEY_ROWS else ["ES256"]
        marks = []
        for alg in ALGS:
            if alg not in algs:
                marks.append("")
                continue
            marks.append(mark(get("keys", reg, trust, alg, mode, "skopeo")) or "?")
        out.append(f"| {reg} | `{trust}` | {mode} | " + " | ".join(marks) + " |")
    out.append("")
    out.append("## Signing-key rotation (`berth key rotate`)")
    out.append("")
    out.append(
        "A new key is published at once and signs after the publish delay; the registry's "
        "configuration is not touched, and tokens of the old key keep working."
    )
    out.append("")
    out.append("| registry | trusts | header | registry restarted | works |")
    out.append("|---|---|---|---|---|")
    for reg, trust, mode in ROTATION_ROWS:
        e = get("rotation", reg, trust, "ES256", mode, "skopeo")
        restart = e.get("restart", "?") if e else "?"
        out.append(f"| {reg} | `{trust}` | {mode} | {restart} | {mark(e) or '?'} |")
    out.append("")
    out.append("## Clients")
    out.append("")
    out.append(
        "Login, push, pull and a refused push, with the registry configured by exactly what "
        "`berth registry-config --flavor distribution2|distribution3` prints (ES256 key; "
        "`key_id` libtrust for 2.8, thumbprint for 3.1). "
        "helm pushes and pulls an OCI chart after `helm registry login`. "
        "buildah is also refused an anonymous pull (with `--policy always`: its default "
        "`missing` would not ask the registry for an image it holds). "
        "`ctr` (containerd 1.6) has no login command and sends `--user` with each request, "
        "so its login is a wrong password being refused. "
        "cosign signs with a local key and no transparency log (push), verifies (pull), and "
        "a user who may pull the image but not push is refused a signature."
    )
    out.append("")
    out.append("| client | " + " | ".join(REGISTRIES) + " |")
    out.append("|---|" + "---|" * len(REGISTRIES))
    for client in CLIENTS:
        marks = []
        for reg in REGISTRIES:
            flavor = "distribution2" if reg.endswith("2.8") else "distribution3"
            mode = "libtrust" if reg.endswith("2.8") else "thumbprint"
            e = get("clients", reg, f"registry-config --flavor {flavor}", "ES256", mode, client)
            marks.append(mark(e) or "?")
        out.append(f"| {client} | " + " | ".join(marks) + " |")
    out.append("")
    out.append(
        "zot is not in the matrix: its Go module is not served by the module proxy the "
        "tests build from, so it cannot be installed like the others. "
        "`berth registry-config --flavor zot` and the `expand_wildcard` / `audience_list` "
        "service settings are checked by unit tests only."
    )
    out.append("")
    out.append(END)
    if missing:
        sys.exit(
            "compat-table: the results lack these cells (run the whole matrix: "
            "`cargo test --test e2e compat_`):\n  " + "\n  ".join(missing)
        )
    return "\n".join(out) + "\n"


def section(text):
    a = text.find(START)
    b = text.find(END)
    if a < 0 or b < a:
        return None
    return text[a : b + len(END)] + "\n"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--results",
        default=os.environ.get("BERTH_COMPAT_RESULTS", os.path.join(root, "target", "compat-results.jsonl")),
    )
    g = p.add_mutually_exclusive_group()
    page = os.path.join(root, "docs", "compatibility.md")
    g.add_argument("--write", metavar="FILE", nargs="?", const=page)
    g.add_argument("--check", metavar="FILE", nargs="?", const=page)
    args = p.parse_args()
    if not os.path.exists(args.results):
        sys.exit(f"compat-table: {args.results} does not exist; run `cargo test --test e2e compat_` first")
    table = render(load(args.results))
    if args.write:
        text = open(args.write, encoding="utf-8").read() if os.path.exists(args.write) else ""
        old = section(text)
        if old is None:
            text = text.rstrip("\n") + ("\n\n" if text else "") + table
        else:
            text = text.replace(old.rstrip("\n"), table.rstrip("\n"))
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"compat-table: updated {args.write}")
    elif args.check:
        text = open(args.check, encoding="utf-8").read() if os.path.exists(args.check) else ""
        old = section(text) or ""
        if old != table:
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(True), table.splitlines(True), f"{args.check} (now)", "from this run's results"
                )
            )
            sys.exit(
                f"compat-table: {args.check} does not match this run's results; "
                f"run scripts/compat-table.py --write {args.check} and commit it"
            )
        print(f"compat-table: {args.check} matches this run's results")
    else:
        sys.stdout.write(table)


if __name__ == "__main__":
    main()
