#!/usr/bin/python3
"""seed.py: create the test buckets in RGW and upload deterministic test objects; write manifest.json.

Run with Debian's /usr/bin/python3 (it has python3-botocore). Uses the botocore low-level S3 client
with path-style addressing and SigV4 ("s3v4"). Object bytes come from random.Random seeded with
"bucket/key", so every run produces identical bytes and sha256 values. Each object is also written
to STATE/objects/<n> so tests can compare bodies and slice ranges without S3.

Buckets: yata-public and yata-media are owned by user1; yata-private by user2.

manifest.json: a JSON list, one entry per object:
  {"bucket", "key", "file" (absolute path), "size" (bytes), "sha256" (hex), "etag" (as RGW returned
   it, quotes included), "owner" ("user1"|"user2"), "content_type", "cache_control" (or null),
   "content_disposition" (or null), "content_language" (or null), "metadata" ({name: value}, names
   without the x-amz-meta- prefix)}

Not on any hot path. Cost: ~1 s for the small objects; the 100 MiB object takes ~1 s to generate
and ~2-4 s to upload.

usage: seed.py --state DIR --endpoint URL --ak1 AK --sk1 SK --ak2 AK --sk2 SK [--region R] [--demo-only]
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import sys

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

MIB = 1024 * 1024

# Keys where SigV4 proxies traditionally break (canonical URI encoding, double encoding, '+' vs
# space, reserved characters, UTF-8, a literal "%2F" that must not turn into '/').
AWKWARD_KEYS = [
    "a+b.txt",
    "space key.txt",
    "paren(1).txt",
    "quote'.txt",
    "bang!star*.txt",
    "tilde~eq=amp&dollar$at@.txt",
    "unicode-日本語-ß.txt",
    "dir/nested/deep.txt",
    "literal%2Fpercent.txt",
    "colon:semi;comma,.txt",
]


def obj(bucket, key, size=None, data=None, content_type="application/octet-stream", owner="user1",
        cache_control=None, content_disposition=None, content_language=None, metadata=None):
    """One object to seed: either literal `data` (bytes) or `size` deterministic random bytes."""
    return {
        "bucket": bucket, "key": key, "size": size, "data": data, "content_type": content_type,
        "owner": owner, "cache_control": cache_control, "content_disposition": content_disposition,
        "content_language": content_language, "metadata": metadata or {},
    }


def object_list(demo_only):
    """The objects to seed, in manifest order."""
    pub = "yata-public"
    hello = obj(pub, "hello.txt", data=b"Hello from Yatagarasu\n", content_type="text/plain")
    k1 = obj(pub, "1k.bin", size=1024)
    meta = obj(pub, "meta.txt", data=b"Object with every header S3 stores.\n",
               content_type="text/plain; charset=utf-8", cache_control="max-age=60",
               content_disposition='attachment; filename="meta.txt"', content_language="en",
               metadata={"owner": "yatagarasu"})
    awkward = [obj(pub, k, data=f"awkward key: {k}\n".encode(), content_type="text/plain")
               for k in AWKWARD_KEYS]
    if demo_only:
        return [hello, k1, meta, awkward[0]]
    return [
        hello, k1,
        obj(pub, "100k.bin", size=100 * 1024),
        meta,
        obj(pub, "nostore.txt", data=b"Must never be cached.\n", content_type="text/plain",
            cache_control="no-store"),
        obj(pub, "100m.bin", size=100 * MIB),
        *awkward,
        obj("yata-media", "video.bin", size=MIB),
        obj("yata-private", "secret.txt", data=b"user2 only\n", content_type="text/plain",
            owner="user2"),
    ]


def body_of(o):
    """Deterministic bytes of an object: literal data, or random.Random("bucket/key") bytes."""
    if o["data"] is not None:
        return o["data"]
    # str seeds are hashed with SHA-512 (seed version 2): stable across runs and interpreters.
    return random.Random(f'{o["bucket"]}/{o["key"]}').randbytes(o["size"])


def client(endpoint, region, ak, sk):
    """botocore S3 client: path-style addressing, SigV4, no retries hiding errors."""
    session = botocore.session.get_session()
    return session.create_client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=ak,
        aws_secret_access_key=sk,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}, connect_timeout=5, read_timeout=120,
                      max_pool_connections=16))


def ensure_bucket(s3, bucket):
    """Create `bucket`; succeeding if this user already owns it."""
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise


def upload(s3, o, body):
    """PUT one object with its headers; returns the ETag RGW sent back."""
    kw = {"Bucket": o["bucket"], "Key": o["key"], "Body": body, "ContentType": o["content_type"]}
    if o["cache_control"]:
        kw["CacheControl"] = o["cache_control"]
    if o["content_disposition"]:
        kw["ContentDisposition"] = o["content_disposition"]
    if o["content_language"]:
        kw["ContentLanguage"] = o["content_language"]
    if o["metadata"]:
        kw["Metadata"] = o["metadata"]
    return s3.put_object(**kw)["ETag"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", default="us-east-1")
    for a in ("ak1", "sk1", "ak2", "sk2"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--demo-only", action="store_true")
    a = ap.parse_args()

    state = os.path.abspath(a.state)
    objdir = os.path.join(state, "objects")
    os.makedirs(objdir, exist_ok=True)
    clients = {"user1": client(a.endpoint, a.region, a.ak1, a.sk1),
               "user2": client(a.endpoint, a.region, a.ak2, a.sk2)}
    ensure_bucket(clients["user1"], "yata-public")
    ensure_bucket(clients["user1"], "yata-media")
    ensure_bucket(clients["user2"], "yata-private")

    objects = object_list(a.demo_only)

    def one(n_o):
        n, o = n_o
        body = body_of(o)
        path = os.path.join(objdir, str(n))
        with open(path, "wb") as f:
            f.write(body)
        etag = upload(clients[o["owner"]], o, body)
        entry = {k: o[k] for k in ("bucket", "key", "content_type", "owner", "cache_control",
                                   "content_disposition", "content_language", "metadata")}
        entry.update(file=path, size=len(body), sha256=hashlib.sha256(body).hexdigest(), etag=etag)
        return entry

    # The 100 MiB object first so its upload overlaps the small ones.
    order = sorted(enumerate(objects), key=lambda n_o: -(n_o[1]["size"] or 0))
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip((n for n, _ in order), pool.map(one, order)))
    manifest = [done[n] for n in range(len(objects))]

    tmp = os.path.join(state, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, os.path.join(state, "manifest.json"))


if __name__ == "__main__":
    try:
        main()
    except ClientError as e:
        print(f"seed.py: S3 error: {e}", file=sys.stderr)
        sys.exit(1)
