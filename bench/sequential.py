#!/usr/bin/env python3
"""The benchmark's yardstick: the same rotations keyturn runs, as a plain
sequential script with boto3 — no saga table, no queue, no lease, no crash
safety. Per rotation (IAM user bench-<i>, Auth0 tenant seq-<i>):

  ListAccessKeys, CreateAccessKey, KMS Encrypt (the new secret, as keyturn seals it),
  STS GetCallerIdentity signed with the new key, Auth0 token + PATCH + GET provider,
  UpdateAccessKey (old key Inactive), GetAccessKeyLastUsed, DeleteAccessKey, SNS Publish.

Usage: sequential.py --endpoint URL --auth0 URL --client-secret S --topic ARN --rotations N
Prints one JSON object: rotations, wall_s, cpu_ms, peak_rss_kb.
"""
import argparse
import json
import resource
import time
import urllib.request

import boto3


def http(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=15) as r:
        return json.loads(r.read() or b"null")


def cpu_ms():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--auth0", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--rotations", type=int, default=200)
    a = ap.parse_args()
    kw = dict(endpoint_url=a.endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    session = boto3.session.Session()
    iam, kms, sns = session.client("iam", **kw), session.client("kms", **kw), session.client("sns", **kw)
    cpu0, t0 = cpu_ms(), time.monotonic()
    for i in range(a.rotations):
        user, tenant = f"bench-{i}", f"{a.auth0}/seq-{i}"
        old = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        new = iam.create_access_key(UserName=user)["AccessKey"]
        kms.encrypt(KeyId="alias/keyturn", Plaintext=new["SecretAccessKey"].encode(), EncryptionContext={"keyturn:saga_id": user})
        sts = session.client("sts", endpoint_url=a.endpoint, region_name="us-east-1",
                             aws_access_key_id=new["AccessKeyId"], aws_secret_access_key=new["SecretAccessKey"])
        sts.get_caller_identity()
        tok = http("POST", f"{tenant}/oauth/token", {"grant_type": "client_credentials", "client_id": "bench-client",
                   "client_secret": a.client_secret, "audience": f"https://seq-{i}.example.com/api/v2/"})["access_token"]
        http("PATCH", f"{tenant}/api/v2/emails/provider", {"name": "ses", "enabled": True, "credentials": {
            "accessKeyId": new["AccessKeyId"], "secretAccessKey": new["SecretAccessKey"], "region": "eu-west-1"}}, tok)
        got = http("GET", f"{tenant}/api/v2/emails/provider", token=tok)
        assert got["credentials"]["accessKeyId"] == new["AccessKeyId"]
        for k in old:
            iam.update_access_key(UserName=user, AccessKeyId=k, Status="Inactive")
            iam.get_access_key_last_used(AccessKeyId=k)
            iam.delete_access_key(UserName=user, AccessKeyId=k)
        sns.publish(TopicArn=a.topic, Subject="rotation succeeded", Message=json.dumps({"user": user, "new_key": new["AccessKeyId"]}))
    wall, cpu = time.monotonic() - t0, cpu_ms() - cpu0
    print(json.dumps({"rotations": a.rotations, "wall_s": wall, "cpu_ms": cpu,
                      "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


if __name__ == "__main__":
    main()
