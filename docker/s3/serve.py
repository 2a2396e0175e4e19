"""Run moto's S3-compatible server on 0.0.0.0:$PORT (default 5000) and create the buckets in $S3_BUCKETS.

The object store of docker-compose.yml's "s3" profile. Any access key and secret are accepted. Stops
on SIGTERM (it is PID 1 in its container, where the default action of SIGTERM does not apply).
"""

import os
import signal
import threading

import boto3
from moto.server import ThreadedMotoServer

port = int(os.environ.get("PORT", "5000"))
server = ThreadedMotoServer(ip_address="0.0.0.0", port=port, verbose=False)
server.start()
client = boto3.session.Session().client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                                        aws_access_key_id="moto", aws_secret_access_key="moto")
for bucket in filter(None, os.environ.get("S3_BUCKETS", "reco-models").split(",")):
    client.create_bucket(Bucket=bucket.strip())
    print(f"bucket {bucket.strip()} ready at http://0.0.0.0:{port}", flush=True)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
server.stop()
