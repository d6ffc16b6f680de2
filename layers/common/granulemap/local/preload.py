"""What the engine's fork server does once for every worker it forks (granulemap/local/warmfork.py): import the
libraries the handlers import, and load botocore's S3 model into the default session.

Nothing here may depend on a function's environment, which ``worker.invoke`` sets per invocation: the libraries read
none of it when imported (template.yaml sets no MPL* variable), and the client made here is given its region, its
endpoint and dummy keys, and thrown away. What it leaves is the default boto3 session's loaded S3 service model and
endpoint rules (about 0.1 s per process), which a handler's first client, made from that session, reuses: it still
resolves its own region, endpoint and credentials from the function's environment.

Aggregate draws with matplotlib, which it would otherwise import (0.4 s) on the run's critical path, after the last
item. granulemap's own modules are imported too; a recipe's module is imported by its first invocation (only the
small SST ones are here: atl06-cell-stats brings zarr and s3fs, 0.3 s, which every other run would pay at start).
"""

from __future__ import annotations

import boto3
import botocore.session  # noqa: F401
import matplotlib.pyplot  # noqa: F401
import numpy  # noqa: F401
import h5py  # noqa: F401
import pydantic  # noqa: F401
import aws_xray_sdk.core  # noqa: F401
import aws_lambda_powertools  # noqa: F401
import aws_lambda_powertools.utilities.parser  # noqa: F401

import granulemap.aggregation  # noqa: F401
import granulemap.catalog  # noqa: F401
import granulemap.local.channel  # noqa: F401
import granulemap.local.worker  # noqa: F401
import granulemap.processing  # noqa: F401
import granulemap.recipes.sst_box_mean  # noqa: F401
import granulemap.recipes.sst_global_mean  # noqa: F401
from granulemap.recipes import available

available()  # the installed recipes' entry points, read once
boto3.client("s3", region_name="us-west-2", endpoint_url="http://127.0.0.1:9", aws_access_key_id="preload",
             aws_secret_access_key="preload")
