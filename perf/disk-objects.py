#!/usr/bin/python3
"""disk-objects.py: the working set of perf/disk-hit.sh: N objects of one size, deterministic.

Object i is `PREFIX + "o%05d.bin" % i`; its SIZE bytes are random.Random("yata-public/" + key)
.randbytes(SIZE), so every upload, check and run agrees on them.

  upload  put the objects into BUCKET (botocore, Debian's python3-botocore), JOBS at a time;
          objects already there with the right size are kept. Prints one JSON line.
          env: YATA_TEST_S3_ENDPOINT, YATA_TEST_AK1, YATA_TEST_SK1 (YATA_TEST_REGION)
  write   write object INDEX's bytes to OUT (for cmp).
  nginx-map  print an nginx `map $uri $VAR_auth {...}` and `map $uri $VAR_date {...}` whose
          values are SigV4 headers (botocore's S3SigV4Auth, empty payload) for a GET of every
          object on ENDPOINT (path style, bucket BUCKET), keyed by the URI nginx sees
          (URI_PREFIX + key). A signed GET stays valid for RGW's 15 min clock-skew window: long
          enough for the single fill of each object.
  sweep   GET every object once from URL (ending in "/", the objects' directory), THREADS
          keep-alive connections, bodies compared with the expected bytes; counts the values of
          the response headers named with --header. Prints one JSON line; exit status 1 when any
          answer was not a 200 with the right bytes.

usage: disk-objects.py upload|write|nginx-map|sweep --prefix P --objects N --size BYTES
           [--bucket yata-public] [--jobs 8] (upload) | --index I --out FILE (write)
           | --endpoint URL --uri-prefix /perf/ --var NAME (nginx-map)
           | --url URL [--threads 4] [--header Cache-Status]... (sweep)

Not on any hot path: a test client. Sends traffic only to the URL given (sweep) or to the S3
endpoint in the env (upload); every socket has a 10 s timeout.
"""
import argparse
import hashlib
import http.client
import json
import os
import random
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def key(prefix, i):
    return f"{prefix}o{i:05d}.bin"


def body(prefix, i, size):
    return random.Random("yata-public/" + key(prefix, i)).randbytes(size)


def s3_client():
    import botocore.session  # Debian's python3-botocore; only upload needs it
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ["YATA_TEST_S3_ENDPOINT"],
        region_name=os.environ.get("YATA_TEST_REGION", "us-east-1"),
        aws_access_key_id=os.environ["YATA_TEST_AK1"],
        aws_secret_access_key=os.environ["YATA_TEST_SK1"],
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      retries={"max_attempts": 3}, max_pool_connections=32))


def cmd_upload(a):
    s3 = s3_client()
    have = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix):
        for o in page.get("Contents", []):
            have[o["Key"]] = o["Size"]
    todo = [i for i in range(a.objects) if have.get(key(a.prefix, i)) != a.size]

    def put(i):
        s3.put_object(Bucket=a.bucket, Key=key(a.prefix, i), Body=body(a.prefix, i, a.size))

    with ThreadPoolExecutor(max_workers=a.jobs) as ex:
        list(ex.map(put, todo))
    print(json.dumps({"bucket": a.bucket, "prefix": a.prefix, "objects": a.objects,
                      "size": a.size, "uploaded": len(todo), "kept": a.objects - len(todo)}))


def cmd_write(a):
    with open(a.out, "wb") as f:
        f.write(body(a.prefix, a.index, a.size))


def cmd_nginx_map(a):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = Credentials(os.environ["YATA_TEST_AK1"], os.environ["YATA_TEST_SK1"])
    region = os.environ.get("YATA_TEST_REGION", "us-east-1")
    empty = hashlib.sha256(b"").hexdigest()
    auth, date = [], []
    for i in range(a.objects):
        k = key(a.prefix, i)
        req = AWSRequest(method="GET", url=f"{a.endpoint}/{a.bucket}/{k}",
                         headers={"x-amz-content-sha256": empty})
        S3SigV4Auth(creds, "s3", region).add_auth(req)
        uri = a.uri_prefix + k
        auth.append(f'        "{uri}" "{req.headers["Authorization"]}";')
        date.append(f'        "{uri}" "{req.headers["X-Amz-Date"]}";')
    for var, lines in (("auth", auth), ("date", date)):
        print(f"    map $uri ${a.var}_{var} {{")
        print('        default "";')
        print("\n".join(lines))
        print("    }")


def cmd_sweep(a):
    u = urllib.parse.urlsplit(a.url)
    assert u.scheme == "http" and u.path.endswith("/"), "--url must be http://HOST:PORT/PATH/"
    lock = threading.Lock()
    tot = {"requests": 0, "ok": 0, "bad": 0, "errors": 0, "headers": {h: {} for h in a.header}}
    problems = []

    def worker(w):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        mine = {"requests": 0, "ok": 0, "bad": 0, "errors": 0}
        seen = {h: {} for h in a.header}
        try:
            for i in range(w, a.objects, a.threads):
                mine["requests"] += 1
                try:
                    conn.request("GET", u.path + f"o{i:05d}.bin")
                    r = conn.getresponse()
                    data = r.read()
                except (OSError, http.client.HTTPException) as e:
                    mine["errors"] += 1
                    with lock:
                        problems.append(f"object {i}: {e!r}")
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                    continue
                for h in a.header:
                    v = r.getheader(h) or "absent"
                    seen[h][v] = seen[h].get(v, 0) + 1
                if r.status == 200 and data == body(a.prefix, i, a.size):
                    mine["ok"] += 1
                else:
                    mine["bad"] += 1
                    with lock:
                        problems.append(f"object {i}: status {r.status}, {len(data)} bytes, "
                                        f"headers {dict(r.getheaders())}")
        finally:
            conn.close()
        with lock:
            for k, v in mine.items():
                tot[k] += v
            for h, vals in seen.items():
                for v, n in vals.items():
                    tot["headers"][h][v] = tot["headers"][h].get(v, 0) + n

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tot["first_problems"] = problems[:3]
    print(json.dumps(tot))
    return 0 if tot["ok"] == a.objects else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["upload", "write", "nginx-map", "sweep"])
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--objects", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--bucket", default="yata-public")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--endpoint")
    ap.add_argument("--uri-prefix", default="/perf/")
    ap.add_argument("--var", default="perf")
    ap.add_argument("--url")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--header", action="append", default=[])
    a = ap.parse_args()
    return {"upload": cmd_upload, "write": cmd_write, "nginx-map": cmd_nginx_map,
            "sweep": cmd_sweep}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
