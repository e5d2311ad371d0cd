#!/usr/bin/env python3
"""Writes the dynamic-security file for scripts/bench-dynsec.sh.

    dynsec_bench_json.py INIT_FILE ADMIN_PASSWORD OUT_FILE [--users N] [--roles N]

INIT_FILE is what `mosquitto_ctrl dynsec init INIT_FILE admin ADMIN_PASSWORD`
wrote. Its admin hash is derived again here first, so the file is only
written if Python's PBKDF2-SHA512 gives the hashes Mosquitto's tools give.
Added to the admin client and role (every password is "benchpass"):

  client  bench      101 iterations, role lg               (logins; 1 role)
  client  bench1k    1,000 iterations, role lg             (logins)
  clients u0..uN-1   101 iterations each, own salts, no roles (distinct logins)
  client  many       roles r1..r(R-1), priorities 1..R-1, then lg with
                     priority 0, checked last                (R roles)
  roles   r1..r(R-1) publishClientSend r<i>/# allow (matches no loadgen topic)
  role    lg         publishClientSend loadgen/# allow,
                     subscribePattern loadgen/# allow

defaultACLAccess stays as init wrote it (publishClientReceive allow).
Standard library only.
"""

import argparse
import base64
import hashlib
import json
import os
import sys

PASSWORD = "benchpass"


def pw_fields(password, iterations):
    salt = os.urandom(12)
    h = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(h).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("init_file")
    ap.add_argument("admin_password")
    ap.add_argument("out_file")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--roles", type=int, default=1000)
    a = ap.parse_args()
    if not 1 <= a.users <= 100_000 or not 2 <= a.roles <= 100_000:
        sys.exit("dynsec_bench_json.py: --users 1..100000, --roles 2..100000")

    with open(a.init_file) as f:
        d = json.load(f)
    admin = d["clients"][0]
    again = hashlib.pbkdf2_hmac(
        "sha512", a.admin_password.encode(), base64.b64decode(admin["salt"]), admin["iterations"]
    )
    if base64.b64encode(again).decode() != admin["password"]:
        sys.exit("dynsec_bench_json.py: the admin hash does not derive again; not writing " + a.out_file)

    lg = {"rolename": "lg", "priority": 0}
    d["clients"].append({"username": "bench", **pw_fields(PASSWORD, 101), "roles": [dict(lg)]})
    d["clients"].append({"username": "bench1k", **pw_fields(PASSWORD, 1000), "roles": [dict(lg)]})
    for i in range(a.users):
        d["clients"].append({"username": f"u{i}", **pw_fields(PASSWORD, 101), "roles": []})
    many_roles = [{"rolename": f"r{i}", "priority": i} for i in range(1, a.roles)]
    d["clients"].append({"username": "many", **pw_fields(PASSWORD, 101), "roles": many_roles + [dict(lg)]})
    for i in range(1, a.roles):
        d["roles"].append(
            {"rolename": f"r{i}", "acls": [{"acltype": "publishClientSend", "topic": f"r{i}/#", "allow": True}]}
        )
    d["roles"].append(
        {
            "rolename": "lg",
            "acls": [
                {"acltype": "publishClientSend", "topic": "loadgen/#", "allow": True},
                {"acltype": "subscribePattern", "topic": "loadgen/#", "allow": True},
            ],
        }
    )
    tmp = a.out_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f, indent=1)
    os.replace(tmp, a.out_file)


if __name__ == "__main__":
    main()
