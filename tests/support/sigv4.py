#!/usr/bin/python3
"""sigv4.py: print AWS SigV4 headers (header-based auth, service "s3") for one request, for curl and
load generators (wrk, oha, h2load) that cannot sign.

Signing uses botocore's S3SigV4Auth (run with Debian's /usr/bin/python3, which has python3-botocore).
The URL must already be percent-encoded exactly as it will be sent: S3 signs the path as sent
(SigV4 canonical URI, no double encoding for s3). A header-signed GET stays valid for the server's
clock-skew window (15 min on AWS and RGW), so a load generator can replay it without re-signing.
The payload hash is that of an empty body (GET/HEAD).

Not on any hot path; ~100 ms (interpreter start-up).

usage: sigv4.py URL ACCESS_KEY SECRET_KEY [REGION] [--method GET] [--header 'Range: bytes=0-99']...
                [--format raw|curl|wrk]
  raw   one "Name: value" per line (default; read with `mapfile -t H` and pass "${H[@]/#/-H}")
  curl  one shell-quoted string of -H arguments (for eval), also what wrk/oha take
example: mapfile -t H < <(sigv4.py "$YATA_TEST_S3_ENDPOINT/yata-public/hello.txt" "$YATA_TEST_AK1" "$YATA_TEST_SK1")
         curl -sS -i "${H[@]/#/-H}" "$YATA_TEST_S3_ENDPOINT/yata-public/hello.txt"
"""
import argparse
import hashlib
import shlex

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def sign(url, access_key, secret_key, region="us-east-1", method="GET", headers=None):
    """Return the headers (list of (name, value)) a SigV4-signed request to `url` must carry,
    including the given extra `headers` (which are signed too)."""
    h = {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()}
    h.update(headers or {})
    req = AWSRequest(method=method, url=url, headers=h)
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(req)
    return list(req.headers.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("access_key")
    ap.add_argument("secret_key")
    ap.add_argument("region", nargs="?", default="us-east-1")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--header", action="append", default=[], help="extra header 'Name: value'")
    ap.add_argument("--format", default="raw", choices=["raw", "curl", "wrk"])
    a = ap.parse_args()
    extra = {}
    for e in a.header:
        k, _, v = e.partition(":")
        extra[k.strip()] = v.strip()
    hdrs = sign(a.url, a.access_key, a.secret_key, a.region, a.method, extra)
    if a.format == "raw":
        for k, v in hdrs:
            print(f"{k}: {v}")
    else:
        print(" ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in hdrs))


if __name__ == "__main__":
    main()
