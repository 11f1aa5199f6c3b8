#!/usr/bin/env python3
"""Overwrite one object in the test RGW (used by the cache tests to change an object in S3).
Run with Debian's /usr/bin/python3 (python3-botocore).
usage: put-object.py BUCKET KEY  < body        (env: YATA_TEST_S3_ENDPOINT, YATA_TEST_AK1/SK1 or
                                                 YATA_TEST_AK2/SK2 when BUCKET is yata-private)
"""
import os
import sys

import botocore.session
from botocore.config import Config


def main():
    bucket, key = sys.argv[1], sys.argv[2]
    user = "2" if bucket == "yata-private" else "1"
    s3 = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=os.environ["YATA_TEST_S3_ENDPOINT"],
        region_name=os.environ.get("YATA_TEST_REGION", "us-east-1"),
        aws_access_key_id=os.environ["YATA_TEST_AK" + user],
        aws_secret_access_key=os.environ["YATA_TEST_SK" + user],
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )
    body = sys.stdin.buffer.read()
    etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]
    print(etag)


if __name__ == "__main__":
    main()
