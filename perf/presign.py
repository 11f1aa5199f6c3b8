#!/usr/bin/env python3
"""presign.py: print a presigned S3 URL (AWS SigV4, query-string authentication) using only the
Python standard library, for load generators and curl hitting an S3 backend directly.

Follows "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)" of the Amazon
S3 API reference: canonical request = METHOD, canonical URI (the URL's path exactly as given: it
must already be percent-encoded as it will be sent; S3 does not double-encode), canonical query
string (the X-Amz-* parameters plus any query already in the URL, sorted and RFC 3986 encoded),
"host:<host[:port]>" as the only signed header, and the payload hash "UNSIGNED-PAYLOAD". Works for
GET and for PUT (`curl -T FILE URL`). Garage and Ceph RGW accept these URLs until they expire.

Not on any hot path: ~30 ms per URL (interpreter start-up).

usage: presign.py METHOD URL ACCESS_KEY SECRET_KEY [REGION] [EXPIRES_SECONDS]
       defaults: REGION us-east-1, EXPIRES_SECONDS 86400 (S3 allows at most 604800)
"""
import datetime
import hashlib
import hmac
import sys
import urllib.parse


def _q(s):
    """RFC 3986 encoding of a query-string name or value (unreserved characters kept)."""
    return urllib.parse.quote(s, safe="-_.~")


def presign(method, url, access_key, secret_key, region="us-east-1", expires=86400, now=None):
    """Return `url` with the SigV4 query parameters (X-Amz-Algorithm ... X-Amz-Signature) added."""
    u = urllib.parse.urlsplit(url)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    params = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    params += [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(int(expires))),
        ("X-Amz-SignedHeaders", "host"),
    ]
    query = "&".join(f"{k}={v}" for k, v in sorted((_q(k), _q(v)) for k, v in params))
    canonical = "\n".join([
        method.upper(), u.path or "/", query, f"host:{u.netloc}\n", "host", "UNSIGNED-PAYLOAD",
    ])
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest(),
    ])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, f"{query}&X-Amz-Signature={sig}", ""))


def main():
    if len(sys.argv) not in (5, 6, 7):
        sys.exit(__doc__.split("\n\n")[-1])
    method, url, ak, sk = sys.argv[1:5]
    region = sys.argv[5] if len(sys.argv) > 5 else "us-east-1"
    expires = int(sys.argv[6]) if len(sys.argv) > 6 else 86400
    print(presign(method, url, ak, sk, region, expires))


if __name__ == "__main__":
    main()
