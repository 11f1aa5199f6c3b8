#!/usr/bin/python3
"""zipf-load.py: a fixed, seeded GET workload over N small objects, for counting (not for speed).

The objects are `PREFIX + "o%05d.bin" % i` for i in 0..N-1; object i's size (MIN..MAX bytes) and
bytes come from random.Random(PREFIX + str(i)), so every run, upload and check agrees on them.
The request sequence is REQUESTS object indices drawn from random.Random(SEED): Zipf(S) over the
ranks 1..N (P(rank k) ~ 1/k^S; S = 0 is uniform), ranks mapped to objects by a seeded shuffle.

  upload   put the objects into BUCKET (botocore, Debian's python3-botocore: the only non-stdlib
           import, and only here); objects already there with the right size are kept.
           env: YATA_TEST_S3_ENDPOINT, YATA_TEST_AK1, YATA_TEST_SK1 (YATA_TEST_REGION)
  stats    print the sequence's facts (distinct objects, share of the top 1% / 10%) as JSON
  run      send the sequence to URL_BASE (the proxy's URL of PREFIX, ending in "/"): the sequence
           is cut into batches of PER_CONN consecutive requests, each batch on a fresh keep-alive
           connection (so SO_REUSEPORT spreads them over the shards), CONNS threads each taking
           batches w, w+CONNS, ... Every body is compared with the expected bytes. Prints one
           JSON line: requests, ok, bad (status or bytes), errors, X-Cache counts, connections.

usage: zipf-load.py upload|stats|run [--objects 2000] [--min-size 1024] [--max-size 4096]
           [--prefix perf-zipf/] [--requests 20000] [--seed 1] [--s 1.0]
           [--bucket yata-public] (upload) | [--url URL_BASE] [--conns 64] [--per-conn 50] (run)

Not on any hot path: a test client. Sends traffic only to the URL given (run) or to the S3
endpoint in the env (upload); every socket has a 10 s timeout.
"""
import argparse
import bisect
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse


def key(prefix, i):
    return f"{prefix}o{i:05d}.bin"


def body(prefix, i, lo, hi):
    r = random.Random(prefix + str(i))
    return r.randbytes(lo + r.randrange(hi - lo + 1))


def sequence(a):
    """The REQUESTS object indices of the workload."""
    n = a.objects
    cum, acc = [], 0.0
    for k in range(1, n + 1):
        acc += 1.0 / (k ** a.s)
        cum.append(acc)
    rng = random.Random(f"zipf-seq-{a.seed}")
    ranks = [bisect.bisect_left(cum, rng.random() * acc) for _ in range(a.requests)]
    perm = list(range(n))
    random.Random(f"zipf-perm-{a.seed}").shuffle(perm)
    return [perm[min(r, n - 1)] for r in ranks]


def cmd_stats(a):
    seq = sequence(a)
    counts = {}
    for i in seq:
        counts[i] = counts.get(i, 0) + 1
    top = sorted(counts.values(), reverse=True)
    share = lambda f: sum(top[: max(1, int(a.objects * f))]) / len(seq)
    print(json.dumps({"requests": len(seq), "objects": a.objects, "s": a.s, "seed": a.seed,
                      "distinct": len(counts), "top1pct_share": round(share(0.01), 4),
                      "top10pct_share": round(share(0.10), 4)}))


def cmd_upload(a):
    import botocore.session  # Debian's python3-botocore; only the upload needs it
    from botocore.config import Config

    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ["YATA_TEST_S3_ENDPOINT"],
        region_name=os.environ.get("YATA_TEST_REGION", "us-east-1"),
        aws_access_key_id=os.environ["YATA_TEST_AK1"],
        aws_secret_access_key=os.environ["YATA_TEST_SK1"],
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      retries={"max_attempts": 3}))
    have = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix):
        for o in page.get("Contents", []):
            have[o["Key"]] = o["Size"]
    put = 0
    for i in range(a.objects):
        b = body(a.prefix, i, a.min_size, a.max_size)
        if have.get(key(a.prefix, i)) != len(b):
            s3.put_object(Bucket=a.bucket, Key=key(a.prefix, i), Body=b)
            put += 1
    print(json.dumps({"bucket": a.bucket, "prefix": a.prefix, "objects": a.objects,
                      "uploaded": put, "kept": a.objects - put}))


def cmd_run(a):
    seq = sequence(a)
    u = urllib.parse.urlsplit(a.url)
    assert u.scheme == "http" and u.path.endswith("/"), "--url must be http://HOST:PORT/PATH/"
    bodies = {i: body(a.prefix, i, a.min_size, a.max_size) for i in set(seq)}
    batches = [seq[j:j + a.per_conn] for j in range(0, len(seq), a.per_conn)]
    lock = threading.Lock()
    tot = {"requests": 0, "ok": 0, "bad": 0, "errors": 0, "connections": 0, "x_cache": {}}
    first_problem = []

    def worker(w):
        mine = {"requests": 0, "ok": 0, "bad": 0, "errors": 0, "connections": 0}
        xc = {}
        for b in range(w, len(batches), a.conns):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            mine["connections"] += 1
            try:
                for i in batches[b]:
                    mine["requests"] += 1
                    try:
                        conn.request("GET", u.path + f"o{i:05d}.bin")
                        r = conn.getresponse()
                        data = r.read()
                    except (OSError, http.client.HTTPException) as e:
                        mine["errors"] += 1
                        if not first_problem:
                            first_problem.append(f"object {i}: {e!r}")
                        conn.close()
                        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                        mine["connections"] += 1
                        continue
                    x = r.getheader("X-Cache") or "absent"
                    xc[x] = xc.get(x, 0) + 1
                    if r.status == 200 and data == bodies[i]:
                        mine["ok"] += 1
                    else:
                        mine["bad"] += 1
                        if not first_problem:
                            first_problem.append(f"object {i}: status {r.status}, {len(data)} bytes")
            finally:
                conn.close()
        with lock:
            for k, v in mine.items():
                tot[k] += v
            for k, v in xc.items():
                tot["x_cache"][k] = tot["x_cache"].get(k, 0) + v

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tot["seconds"] = round(time.monotonic() - t0, 2)
    tot["distinct"] = len(bodies)
    if first_problem:
        tot["first_problem"] = first_problem[0]
    print(json.dumps(tot, sort_keys=True))
    return 0 if tot["ok"] == len(seq) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["upload", "stats", "run"])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--min-size", type=int, default=1024)
    ap.add_argument("--max-size", type=int, default=4096)
    ap.add_argument("--prefix", default="perf-zipf/")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--s", type=float, default=1.0, help="Zipf exponent (0 = uniform)")
    ap.add_argument("--bucket", default="yata-public")
    ap.add_argument("--url")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--per-conn", type=int, default=50)
    a = ap.parse_args()
    if not (0 < a.min_size <= a.max_size and a.objects > 0 and a.requests > 0):
        ap.error("need 0 < --min-size <= --max-size, --objects > 0, --requests > 0")
    if a.cmd == "run" and not a.url:
        ap.error("run needs --url")
    return {"upload": cmd_upload, "stats": cmd_stats, "run": cmd_run}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
