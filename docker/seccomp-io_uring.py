#!/usr/bin/env python3
"""seccomp-io_uring.py: derive a Docker seccomp profile that allows io_uring from your Docker's own
default profile.

Docker 25+ (and recent containerd RuntimeDefault profiles) no longer allow io_uring_setup,
io_uring_enter and io_uring_register. Under those profiles the proxy falls back to epoll (see
kernel-notes.md section 3). This script reads a profile, typically `profiles/seccomp/default.json`
from the moby repository at the tag of the Docker version you run. It drops the three
syscalls from every rule that does not allow them, and appends one SCMP_ACT_ALLOW rule for them.
Everything else in the profile is unchanged. Output goes to stdout.

Not part of the proxy; a one-off operator tool. Standard library only.
NOTE: Docker cannot be run on our CI machines; this script is tested on JSON files only.

usage: seccomp-io_uring.py DOCKER_DEFAULT_PROFILE.json > seccomp-io_uring.json
       docker run --security-opt seccomp=seccomp-io_uring.json ...
"""
import json
import sys

IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]


def allow_io_uring(profile):
    """Return `profile` (a parsed seccomp profile dict) with io_uring allowed unconditionally."""
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
    rules.append({
        "names": IO_URING,
        "action": "SCMP_ACT_ALLOW",
        "comment": "yatagarasu: io_uring for the thread-per-core runtime (kernel-notes.md)",
    })
    return dict(profile, syscalls=rules)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-2])
    with open(sys.argv[1], encoding="utf-8") as f:
        profile = json.load(f)
    json.dump(allow_io_uring(profile), sys.stdout, indent="\t")
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
