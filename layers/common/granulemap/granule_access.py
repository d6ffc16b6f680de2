"""How a recipe reaches a granule: in place on a local disk, or in S3 (with DAAC credentials when the run has them)."""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import ClientError

from granulemap.credentials import forget_cached
from granulemap.errors import CredentialsExpired, GranuleUnreadable
from granulemap.models import RunContext
from granulemap.storage import NETWORK_ERRORS, split_s3_url, translate_s3_error

EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidToken", "TokenRefreshRequired"}
"""S3 error codes of temporary credentials that have expired or been revoked."""


def local_path_of(url: str) -> str | None:
    """The local file path of a plain path or file:// URL; None for s3:// URLs."""
    if url.startswith("s3://"):
        return None
    return url.removeprefix("file://")


class GranuleAccess:
    """Opens the granules of one item. Credentials are read by reference, cached and refreshed before expiry."""

    def __init__(self, run: RunContext, credentials_loader: Any | None = None):
        self.run = run
        self._credentials_loader = credentials_loader

    def local_path(self, url: str) -> str | None:
        path = local_path_of(url)
        if path is not None and not os.path.isfile(path):
            raise GranuleUnreadable(f"granule {path} does not exist or is not a file")
        return path

    def s3_credentials(self) -> dict[str, str] | None:
        """Temporary DAAC credentials (accessKeyId, secretAccessKey, sessionToken), or None to use the role's own."""
        if self.run.credentials is None or self._credentials_loader is None:
            return None
        return self._credentials_loader(self.run.credentials)

    def credentials_rejected(self, used: dict[str, str] | None) -> None:
        """S3 refused the credentials ``used`` as expired (the read then raises CredentialsExpired, which the state
        machine retries): forget this process's cached copy, so that the retry, perhaps in this same warm Lambda,
        reads the stored parameter again, or gets new credentials if it still holds these."""
        if self.run.credentials is not None and used is not None:
            forget_cached(self.run.credentials, rejected=used)

    def _s3_client(self, creds: dict[str, str] | None) -> Any:
        from granulemap.storage import s3_client

        if creds is None:
            return s3_client()
        import boto3

        return boto3.client(
            "s3",
            aws_access_key_id=creds["accessKeyId"],
            aws_secret_access_key=creds["secretAccessKey"],
            aws_session_token=creds["sessionToken"],
        )

    def read_bytes(self, url: str) -> bytes:
        """The whole granule in memory (local file or S3 object)."""
        path = self.local_path(url)
        if path is not None:
            with open(path, "rb") as f:
                return f.read()
        bucket, key = split_s3_url(url)
        creds = self.s3_credentials()
        try:
            return self._s3_client(creds).get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in EXPIRED_CODES:
                self.credentials_rejected(creds)
                raise CredentialsExpired(f"S3 credentials expired while reading {url}") from exc
            if code in {"NoSuchKey", "404", "AccessDenied", "403"}:
                raise GranuleUnreadable(f"cannot read granule {url}: {code}") from exc
            raise translate_s3_error(exc, f"reading {url}") from exc
        except NETWORK_ERRORS as exc:  # a timeout, a response cut short: StorageThrottled, retried
            raise translate_s3_error(exc, f"reading {url}") from exc
