"""The official Python client (`pip install kubernetes`) in-cluster, pointed at a projected
directory: it asks "who am I?" every second until DURATION seconds (default 300) have passed.

The client re-reads the token file about once a minute (InClusterConfigLoader's refresh period),
so run it against `projected-token emulate` with tokens of 350 s or more (5 times the bound, so
a replaced token is never used past its warnafter) and check it with `--max-reload-delay 70s`:

    LIFETIME=350 DURATION=600 MAX_RELOAD_DELAY=70s examples/reload-test.sh \
        'python3 examples/python/whoami_loop.py'
"""
import os
import time

from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

sa = os.environ.get("SERVICEACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
# load_incluster_config() reads these two paths from the fixed in-pod location; the loader
# takes them as arguments, so the same code runs against a local emulator.
InClusterConfigLoader(token_filename=f"{sa}/token", cert_filename=f"{sa}/ca.crt").load_and_set()
api = client.AuthenticationV1Api()
deadline = time.monotonic() + float(os.environ.get("DURATION", "300"))
while time.monotonic() < deadline:
    review = api.create_self_subject_review(client.V1SelfSubjectReview())
    print("ok", review.status.user_info.username, flush=True)
    time.sleep(1)
