#!/usr/bin/python3
"""check-backends.py: verify the backends start-backends.sh started (a smoke test of the fixtures).

Run with Debian's /usr/bin/python3 (python3-botocore) after sourcing STATE/env, or pass --env FILE.
Checks, each printed as "ok ..." or "FAIL ...":
  - every manifest object is readable by its owner over plain HTTP with the recorded bytes
    (sha256), Content-Type, Cache-Control, Content-Disposition, Content-Language and metadata;
  - the same through the TLS endpoint (nginx), verified against the private CA (small objects);
  - user2's credentials get 403 on yata-public, user1's on yata-private, a wrong secret 403,
    an unsigned request 403;
  - RGW accepts SigV4 signed for a region other than us-east-1 (it does not check the scope region);
  - a Range GET returns 206 with the right bytes;
  - the RGW ops log (if enabled) records a GET within 2 s.
Exit status 0 when everything passed. Not on any hot path; ~2-5 s (reads the 100 MiB object once).

usage: check-backends.py [--env STATE/env] [--skip-large]
"""
import argparse
import hashlib
import json
import os
import shlex
import sys
import time

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

FAILS = []


def check(cond, what):
    """Print ok/FAIL for one assertion and remember failures."""
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def load_env(path):
    """Parse the `export NAME='value'` lines of STATE/env into os.environ."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("export "):
                name, _, value = line[len("export "):].rstrip("\n").partition("=")
                os.environ[name] = shlex.split(value)[0] if value else ""


def client(endpoint, ak, sk, region=None, verify=None):
    """botocore S3 client, path-style, SigV4, no retries."""
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=region or os.environ["YATA_TEST_REGION"],
        aws_access_key_id=ak, aws_secret_access_key=sk, verify=verify,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}))


def status_of(fn):
    """HTTP status of a botocore call (200 on success)."""
    try:
        fn()
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def ops_count(path):
    """Number of entries in the RGW ops log. RGW 16.2 sometimes writes two JSON objects on one line
    ("}{"), so count the per-entry "trans_id" field instead of lines."""
    with open(path, "rb") as f:
        return f.read().count(b'"trans_id":')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env")
    ap.add_argument("--skip-large", action="store_true", help="skip objects over 10 MiB")
    a = ap.parse_args()
    if a.env:
        load_env(a.env)
    env = os.environ
    ep, tls_ep, ca = env["YATA_TEST_S3_ENDPOINT"], env["YATA_TEST_S3_TLS_ENDPOINT"], env["YATA_TEST_S3_CA_FILE"]
    creds = {"user1": (env["YATA_TEST_AK1"], env["YATA_TEST_SK1"]),
             "user2": (env["YATA_TEST_AK2"], env["YATA_TEST_SK2"])}
    plain = {u: client(ep, *c) for u, c in creds.items()}
    tls = {u: client(tls_ep, *c, verify=ca) for u, c in creds.items()}
    with open(env["YATA_TEST_MANIFEST"], encoding="utf-8") as f:
        manifest = json.load(f)

    for m in manifest:
        if a.skip_large and m["size"] > 10 * 1024 * 1024:
            continue
        r = plain[m["owner"]].get_object(Bucket=m["bucket"], Key=m["key"])
        body = r["Body"].read()
        with open(m["file"], "rb") as f:
            disk = f.read()
        check(hashlib.sha256(body).hexdigest() == m["sha256"] == hashlib.sha256(disk).hexdigest()
              and len(body) == m["size"], f'GET {m["bucket"]}/{m["key"]} bytes ({m["size"]})')
        check(r["ETag"] == m["etag"], f'  ETag {r["ETag"]}')
        check(r["ContentType"] == m["content_type"], f'  Content-Type {r["ContentType"]!r}')
        check(r.get("CacheControl") == m["cache_control"], f'  Cache-Control {r.get("CacheControl")!r}')
        check(r.get("ContentDisposition") == m["content_disposition"],
              f'  Content-Disposition {r.get("ContentDisposition")!r}')
        check(r.get("ContentLanguage") == m["content_language"],
              f'  Content-Language {r.get("ContentLanguage")!r}')
        check(r["Metadata"] == m["metadata"], f'  metadata {r["Metadata"]}')
        if m["size"] <= 1024 * 1024:
            t = tls[m["owner"]].get_object(Bucket=m["bucket"], Key=m["key"])["Body"].read()
            check(t == body, f'  same bytes via TLS {tls_ep}')

    check(status_of(lambda: plain["user2"].get_object(Bucket="yata-public", Key="hello.txt")) == 403,
          "user2 GET yata-public/hello.txt -> 403")
    check(status_of(lambda: plain["user1"].get_object(Bucket="yata-private", Key="secret.txt")) == 403,
          "user1 GET yata-private/secret.txt -> 403")
    wrong = client(ep, creds["user1"][0], "x" * 40)
    check(status_of(lambda: wrong.get_object(Bucket="yata-public", Key="hello.txt")) == 403,
          "wrong secret -> 403")
    anon = botocore.session.get_session().create_client(
        "s3", endpoint_url=ep, region_name="us-east-1",
        config=Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"}))
    check(status_of(lambda: anon.get_object(Bucket="yata-public", Key="hello.txt")) == 403,
          "unsigned GET -> 403")
    other = client(ep, *creds["user1"], region="eu-west-3")
    check(status_of(lambda: other.get_object(Bucket="yata-public", Key="hello.txt")) == 200,
          "SigV4 scoped to region eu-west-3 accepted (RGW ignores the scope region)")
    r = plain["user1"].get_object(Bucket="yata-public", Key="1k.bin", Range="bytes=10-19")
    with open(next(m["file"] for m in manifest if m["key"] == "1k.bin"), "rb") as f:
        want = f.read()[10:20]
    check(r["ResponseMetadata"]["HTTPStatusCode"] == 206 and r["Body"].read() == want
          and r["ContentRange"] == "bytes 10-19/1024", "Range bytes=10-19 -> 206 + right bytes")

    ops = env.get("YATA_TEST_OPS_LOG", "")
    if ops:
        # Match entries by request id (x-amz-request-id == the entry's "trans_id").
        before = ops_count(ops)
        t0 = time.monotonic()
        ids = [plain["user1"].get_object(Bucket="yata-public", Key="hello.txt"),
               plain["user2"].get_object(Bucket="yata-private", Key="secret.txt")]
        ids = [r["ResponseMetadata"]["RequestId"] for r in ids]
        while time.monotonic() - t0 < 2:
            with open(ops, "rb") as f:
                text = f.read()
            if all(f'"trans_id":"{i}"'.encode() in text for i in ids):
                break
            time.sleep(0.01)
        found = sum(f'"trans_id":"{i}"'.encode() in text for i in ids)
        check(found == 2, f"ops log has {found} of 2 GETs by request id after "
                          f"{time.monotonic() - t0:.2f}s ({ops_count(ops) - before} new entries)")
    else:
        print("skip ops log (YATA_TEST_OPS_LOG empty)")

    print(f"{len(FAILS)} failure(s)")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
