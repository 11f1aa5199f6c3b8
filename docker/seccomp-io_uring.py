#!/usr/bin/env python3
"""seccomp-io_uring.py: make a Docker seccomp profile that allows io_uring, starting from
Docker's own default profile.

Docker 25.0 and later (moby/moby#46762), and containerd 2.0's RuntimeDefault profile, do not
allow io_uring_setup, io_uring_enter or io_uring_register. Under those profiles the calls
return EPERM and every shard of the proxy runs on epoll (kernel-notes.md section 3).

This script reads a profile in Docker's JSON format, usually `seccomp/default.json` from
github.com/moby/profiles (or `profiles/seccomp/default.json` in moby/moby for older Docker
releases) at the version your Docker Engine runs. It removes the three syscalls from every
rule that does not allow them and adds one unconditional SCMP_ACT_ALLOW rule for them (unless
such a rule is there already). Every other rule is kept unchanged and in order. The result is
written to stdout, tab-indented like Docker's own file.

docker/seccomp-io_uring.json in this repository is this script's output for moby/profiles
seccomp/default.json at commit 02e898b137aed1024e232d59bcb05e6179b72177 (a 2026 profile
with the socket address-family allowlist). Regenerate it from the default profile of the
Docker version you run when that profile changes.

Not part of the proxy: a one-off operator tool, Python 3 standard library only.
Docker cannot run on our CI machines, so the script is checked on JSON files only:
    python3 -m doctest -v docker/seccomp-io_uring.py

usage: seccomp-io_uring.py DOCKER_DEFAULT_PROFILE.json > seccomp-io_uring.json
       docker run --security-opt seccomp=seccomp-io_uring.json ...
"""
import json
import sys

IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]

COMMENT = ("yatagarasu: allow io_uring for the thread-per-core runtime (kernel-notes.md "
           "section 3)")


def _unconditional_allow(rule):
    """True for an SCMP_ACT_ALLOW rule without argument, capability or arch conditions."""
    return (rule.get("action") == "SCMP_ACT_ALLOW"
            and not rule.get("args")
            and not rule.get("includes")
            and not rule.get("excludes"))


def allow_io_uring(profile):
    """Return a copy of `profile` (a parsed Docker seccomp profile) allowing io_uring.

    Rules that deny the calls lose those names (a rule left with no names is dropped); an
    unconditional allow rule is appended unless one already lists all three.

    >>> base = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
    ...     {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
    ...     {"names": ["io_uring_setup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
    >>> out = allow_io_uring(base)
    >>> [r["names"] for r in out["syscalls"]]
    [['read', 'write'], ['io_uring_setup', 'io_uring_enter', 'io_uring_register']]
    >>> out["syscalls"][-1]["action"]
    'SCMP_ACT_ALLOW'
    >>> allow_io_uring(out) == out      # idempotent
    True
    >>> base["syscalls"][1]["names"]    # the input is not modified
    ['io_uring_setup']
    >>> allow_io_uring({"syscalls": []})
    Traceback (most recent call last):
    ...
    ValueError: not a Docker seccomp profile (no defaultAction/syscalls)
    """
    if "syscalls" not in profile or "defaultAction" not in profile:
        raise ValueError("not a Docker seccomp profile (no defaultAction/syscalls)")
    rules = []
    for rule in profile["syscalls"] or []:
        names = rule.get("names", [])
        if rule.get("action") != "SCMP_ACT_ALLOW" and any(n in IO_URING for n in names):
            names = [n for n in names if n not in IO_URING]
            if not names:
                continue
            rule = dict(rule, names=names)
        rules.append(rule)
    already = any(_unconditional_allow(r) and all(n in r.get("names", []) for n in IO_URING)
                  for r in rules)
    if not already:
        rules.append({"names": list(IO_URING), "action": "SCMP_ACT_ALLOW", "comment": COMMENT})
    return dict(profile, syscalls=rules)


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__.strip().splitlines()[-2].strip())
    with open(sys.argv[1], encoding="utf-8") as f:
        profile = json.load(f)
    json.dump(allow_io_uring(profile), sys.stdout, indent="\t")
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
