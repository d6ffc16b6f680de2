"""Every S3 request a local run makes is one its caller's IAM role in template.yaml allows.

moto does not enforce IAM, so a permission the code needs and the template lacks would show only in AWS (AccessDenied
on the first real run), and one the template grants but no code needs would go unnoticed. Here the real state machine
runs SST and ATL06 executions with one worker and one item at a time, so that each request the emulated S3 receives
falls within exactly one Lambda invocation (or, between them, is the state machine's own: the Map's ItemReader, the
RecordFailure state); each request becomes the IAM action AWS would authorize it as, on the object's ARN, and is
checked against the statements of that function's (or the state machine's) role, as SAM translates the template.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import io
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from granulemap.local.engine import LOCAL_BUCKET, LocalEngine

from conftest import DATA, MUR25
from test_template import cfn, grants, role_of_function, sam, state_machine_role  # noqa: F401 (fixtures by name)

pytestmark = pytest.mark.slow

STATE_MACHINE = "PipelineStateMachine"
"""Who made a request that fell between Lambda invocations: moto's engine itself, as the state machine's role."""


class S3Requests:
    """WSGI middleware recording each request to the engine's bucket: (time, method, key or None for the bucket,
    query, the copy source if any, and the keys of a multi-object delete)."""

    def __init__(self, app: Any, bucket: str, seen: list[tuple[Any, ...]], lock: threading.Lock):
        self.app, self.bucket, self.seen, self.lock = app, bucket, seen, lock

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        first, _, key = path.lstrip("/").partition("/")
        if first == self.bucket:
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            deleted: list[str] = []
            if environ["REQUEST_METHOD"] == "POST" and "delete" in query:
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                environ["wsgi.input"] = io.BytesIO(body)
                deleted = [e.text or "" for e in ET.fromstring(body).iter() if e.tag.endswith("Key")]
            with self.lock:
                self.seen.append((time.time(), environ["REQUEST_METHOD"], key or None, query,
                                  environ.get("HTTP_X_AMZ_COPY_SOURCE"), deleted))
        return self.app(environ, start_response)


KNOWN_QUERY = {"list-type", "prefix", "delimiter", "continuation-token", "start-after", "max-keys", "encoding-type",
               "fetch-owner", "x-id", "delete", "uploads", "uploadId", "partNumber"}
"""Query parameters of the requests ``actions`` knows the IAM action of: any other (?acl, ?tagging, ?versions,
versionId...) needs another permission, and is reported as unknown, which no role allows."""


def actions(method: str, key: str | None, query: dict[str, list[str]], copy_source: str | None,
            deleted: list[str]) -> list[tuple[str, str | None]]:
    """The (IAM action, object key or None for the bucket) pairs AWS authorizes an S3 request as."""
    if set(query) - KNOWN_QUERY or copy_source and not copy_source.lstrip("/").startswith(f"{LOCAL_BUCKET}/"):
        return [(f"unknown: {method} {sorted(query)} copy {copy_source}", key)]
    if key is None:
        if method == "POST" and "delete" in query:
            return [("s3:DeleteObject", k) for k in deleted]  # DeleteObjects: s3:DeleteObject on each key
        return [("s3:ListBucket", None)] if method in ("GET", "HEAD") else [(f"bucket {method}", None)]
    if method in ("GET", "HEAD"):
        return [("s3:ListMultipartUploadParts" if "uploadId" in query else "s3:GetObject", key)]
    if method == "DELETE":
        return [("s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject", key)]
    if method in ("PUT", "POST"):  # PutObject, UploadPart, Create/CompleteMultipartUpload; a copy also reads
        source = copy_source.lstrip("/").partition("/")[2] if copy_source else None
        return [("s3:PutObject", key)] + ([("s3:GetObject", source)] if source else [])
    return [(f"object {method}", key)]


def resource_pattern(resource: Any, bucket: str) -> str | None:
    """A role statement's S3 resource as an ARN pattern for this bucket; None for any other kind of resource."""
    arn = f"arn:aws:s3:::{bucket}"
    if resource == {"Fn::GetAtt": ["DataBucket", "Arn"]}:
        return arn
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        text = resource["Fn::Sub"]
        if text.startswith("${DataBucket.Arn}") and "${" not in text[len("${DataBucket.Arn}"):]:
            return arn + text[len("${DataBucket.Arn}"):]
    return None


def allowed(cfn: dict[str, Any], caller: str, action: str, key: str | None, bucket: str) -> bool:  # noqa: F811
    role = state_machine_role(cfn) if caller == STATE_MACHINE else role_of_function(cfn, caller)
    arn = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    patterns = [p for r in grants(cfn, role, action) if (p := resource_pattern(r, bucket))]
    # IAM's wildcards: * any run of characters, / included; ? one character. fnmatchcase's [ ] never occur here.
    return any(fnmatch.fnmatchcase(arn, p) for p in patterns)


def caller_of(when: float, invocations: list[dict[str, Any]]) -> str:
    inside = [i["function"] for i in invocations if i["start"] <= when <= i["start"] + i["seconds"]]
    assert len(inside) <= 1, f"a request at {when} falls within several invocations: {inside}"
    return inside[0] if inside else STATE_MACHINE


@pytest.fixture(scope="module")
def checked_runs(tmp_path_factory) -> list[tuple[str, str, str | None]]:
    """(caller, action, key) of every S3 request of the runs below."""
    from granulemap.synthetic import make_synthetic_series

    tmp = tmp_path_factory.mktemp("iam")
    sst = tmp / "sst"
    make_synthetic_series(MUR25, sst, dt.date(2018, 12, 1), 3)
    (sst / MUR25.name.replace("20181231", "20181204")).write_bytes(b"not a granule")  # its item fails alone
    atl06 = tmp / "atl06"
    atl06.mkdir()
    real = next((DATA / "atl06").glob("ATL06_*.h5"))
    shutil.copy(real, atl06 / real.name)
    seen: list[tuple[Any, ...]] = []
    lock = threading.Lock()
    made: list[tuple[str, str, str | None]] = []
    with LocalEngine(workers=1) as engine:
        engine._channel.app = S3Requests(engine._channel.app, engine.bucket, seen, lock)
        engine._server._server.app = S3Requests(engine._server._server.app, engine.bucket, seen, lock)
        runs = [
            # one item per granule: the broken one fails its item, which RecordFailure stores
            {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-04", "source": str(sst),
             "group": "granule", "tolerated_failure_percentage": 100},
            {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-04", "source": str(sst),
             "recompute": True, "tolerated_failure_percentage": 100},  # dekads: the broken granule fails alone
            {"recipe": "atl06-cell-stats", "start": "2018-10-13", "end": "2018-10-13", "source": str(atl06)},
        ]
        for execution_input in runs:
            engine.reset_progress()
            with lock:
                seen.clear()
            desc = engine.run({**execution_input, "max_concurrency": 1}, timeout=600)
            assert desc["status"] == "SUCCEEDED", (desc.get("error"), desc.get("cause"))
            with lock:
                requests = list(seen)
            invocations = list(engine.invocations)
            made += [(caller_of(when, invocations), action, key)
                     for when, method, k, query, copy_source, deleted in requests
                     for action, key in actions(method, k, query, copy_source, deleted)]
            if execution_input["recipe"] == "atl06-cell-stats" and real.name in {p.name for p in atl06.iterdir()}:
                # the same period again from a later release of the granule: BuildCatalog forgets the results its
                # blocks held under the earlier granule's items
                (atl06 / real.name).rename(atl06 / real.name.replace("_209_01", "_210_01"))
                runs.append(execution_input)
    return made


def test_every_s3_request_of_a_run_is_allowed_by_its_callers_role(cfn: dict[str, Any],  # noqa: F811
                                                                   checked_runs) -> None:
    refused = sorted({(caller, action, key) for caller, action, key in checked_runs
                      if not allowed(cfn, caller, action, key, LOCAL_BUCKET)}, key=str)
    assert refused == [], "requests template.yaml's roles do not allow:\n" + "\n".join(map(str, refused))


def test_the_runs_exercise_each_kind_of_write_and_the_check_can_refuse(cfn: dict[str, Any],  # noqa: F811
                                                                       checked_runs) -> None:
    """Not vacuous: every writer and kind of write the roles are about was seen, and a request no role should make is
    refused by the same check. The deletes matter most: s3fs ignores a refused delete of a Zarr chunk (a block that
    should be empty would keep an earlier run's values), and a lock's release swallows its errors (the next run
    would wait out the lease)."""

    def saw(caller: str, action: str, pattern: str) -> bool:
        return any(c == caller and a == action and k is not None and fnmatch.fnmatchcase(k, pattern)
                   for c, a, k in checked_runs)

    assert saw("CatalogBuilderFunction", "s3:PutObject", "runs/*/manifest.json")
    assert saw(STATE_MACHINE, "s3:GetObject", "runs/*/map-items.json")  # the Map's ItemReader
    assert saw(STATE_MACHINE, "s3:PutObject", "runs/*/failures/*.json")  # RecordFailure
    assert saw("ProcessorFunction", "s3:PutObject", "results/sst-global-mean/*")
    assert saw("ProcessorFunction", "s3:PutObject", "outputs/atl06-cell-stats/*.zarr/*")  # the store's blocks
    assert saw("ProcessorFunction", "s3:DeleteObject", "outputs/atl06-cell-stats/*.zarr/*")  # an all-fill block
    for step in ("CatalogBuilderFunction", "AggregatorFunction"):  # a lock released
        assert saw(step, "s3:DeleteObject", "outputs/atl06-cell-stats/*.zarr.lock"), step
    assert saw("CatalogBuilderFunction", "s3:PutObject", "outputs/atl06-cell-stats/*.zarr.lock")  # growing it
    assert saw("CatalogBuilderFunction", "s3:DeleteObject", "results/atl06-cell-stats/*")  # superseded results
    assert saw("AggregatorFunction", "s3:PutObject", "outputs/sst-global-mean/*.csv")
    assert saw("AggregatorFunction", "s3:PutObject", "runs/*/summary.json")
    assert not allowed(cfn, "ProcessorFunction", "s3:DeleteObject", "runs/x/manifest.json", LOCAL_BUCKET)
    assert not allowed(cfn, STATE_MACHINE, "s3:PutObject", "outputs/sst-global-mean/x/global_mean_sst.csv",
                       LOCAL_BUCKET)
    assert actions("GET", "k", {"tagging": [""]}, None, [])[0][0].startswith("unknown")  # another permission
    assert not allowed(cfn, "AggregatorFunction", actions("PUT", "k", {"acl": [""]}, None, [])[0][0], "k",
                       LOCAL_BUCKET)
