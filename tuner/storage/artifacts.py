"""Where trials keep their files (checkpoints, best weights): an Optuna artifact store.

`--artifacts DIR` opens a `FileSystemArtifactStore` in DIR; `--artifacts s3://BUCKET` a
`Boto3ArtifactStore` (boto3 installed, credentials from the environment as boto3 reads them,
AWS_ENDPOINT_URL for an S3-compatible server), for workers on several machines; the bucket
must exist, and is checked when opened. Without the flag the files go next to a SQLite or journal
file (`tuner.db` -> `tuner.db.artifacts/`), or, for a server database, under the cache
folder, named after the database: workers on other machines then need `--artifacts` pointing
at a folder or bucket they all see.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

from tuner.errors import TunerError
from tuner.storage.urls import JOURNAL_PREFIX, mask_url, parse_url

ARTIFACTS_ENV = "TUNER_ARTIFACTS"
S3_PREFIX = "s3://"
SUFFIX = ".artifacts"

ArtifactStore = FileSystemArtifactStore | Boto3ArtifactStore


def store_errors() -> tuple[type[Exception], ...]:
    """What a store raises when it cannot take or give a file: OSError for a folder (a full
    disk), botocore's errors for a bucket (an unreachable endpoint, a denied request)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


def default_artifacts_root() -> Path:
    """Where server databases' artifacts go by default: ~/.cache/tuner/artifacts."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tuner" / "artifacts"


def resolve_artifacts(cli_value: str | None, storage_url: str) -> str:
    """The artifact location: `--artifacts`, else $TUNER_ARTIFACTS, else next to the storage."""
    if cli_value or os.environ.get(ARTIFACTS_ENV):
        return cli_value or os.environ[ARTIFACTS_ENV]
    if storage_url.startswith(JOURNAL_PREFIX):
        return str(Path(storage_url.removeprefix(JOURNAL_PREFIX)).expanduser()) + SUFFIX
    url = parse_url(storage_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return str(Path(url.database).expanduser()) + SUFFIX
    # A server database: one folder per database, named without its password.
    masked = mask_url(storage_url)
    name = f"{url.host or 'local'}-{url.database or 'db'}"
    digest = hashlib.sha256(masked.encode()).hexdigest()[:8]
    return str(default_artifacts_root() / f"{_safe(name)}-{digest}")


@dataclass(frozen=True)
class Artifacts:
    """An opened artifact store and, for a folder, the folder (to measure what it holds)."""

    location: str
    store: ArtifactStore
    folder: Path | None = None

    def sizes(self, artifact_ids: Iterable[str]) -> dict[str, int]:
        """The named artifacts still in the store, with their sizes in bytes.

        A bucket is listed (one request per thousand objects) rather than asked object by
        object: a study's ids keep pointing at weights removed long ago, and S3 answers a
        delete of a missing key as a success, so what is there has to be found out once.
        """
        wanted = set(artifact_ids)
        if self.folder is None:
            return _bucket_sizes(self.store, wanted)
        found = {}
        for artifact_id in wanted:
            with contextlib.suppress(OSError):  # removed since: takes no space
                found[artifact_id] = (self.folder / artifact_id).stat().st_size
        return found

    def size(self, artifact_ids: Iterable[str]) -> int:
        """Bytes the named artifacts take; one that is gone takes none."""
        return sum(self.sizes(artifact_ids).values())

    def made(self) -> Artifacts:
        """This store, its folder created if missing (a bucket must exist already)."""
        if self.folder is not None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TunerError(
                    f"--artifacts {self.folder}: cannot create the folder: {exc.strerror}"
                ) from None
        return self


def open_artifacts(location: str, create: bool = True) -> Artifacts:
    """The Optuna artifact store at `location`: a folder (created if missing, unless `create`
    is False: a store only read from) or s3://BUCKET."""
    if location.startswith(S3_PREFIX):
        bucket = location.removeprefix(S3_PREFIX).rstrip("/")
        if not bucket or "/" in bucket:
            raise TunerError(
                f"--artifacts {location}: use s3://BUCKET (a bucket of its own, no key prefix)"
            )
        return Artifacts(location, Boto3ArtifactStore(bucket, _s3_client(location, bucket)))
    path = Path(location).expanduser()
    artifacts = Artifacts(location, FileSystemArtifactStore(path), path)
    return artifacts.made() if create else artifacts


def _s3_client(location: str, bucket: str) -> Any:
    """A boto3 S3 client that has seen `bucket`; a missing bucket, refused credentials or an
    unreachable endpoint is a TunerError here, not a traceback at a trial's first save."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
    except ImportError:
        raise TunerError(
            f"--artifacts {location}: S3 needs boto3; install it with: pip install boto3"
        ) from None
    try:
        client = boto3.client("s3")
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        reason = {"404": "no such bucket", "NoSuchBucket": "no such bucket"}.get(code, str(exc))
        raise TunerError(f"--artifacts {location}: {reason}") from None
    except EndpointConnectionError as exc:
        raise TunerError(
            f"--artifacts {location}: cannot reach {exc.kwargs['endpoint_url']}"
        ) from None
    except BotoCoreError as exc:  # no credentials, no region, a malformed endpoint
        raise TunerError(f"--artifacts {location}: {exc}") from None
    return client


def _bucket_sizes(store: Boto3ArtifactStore, wanted: set[str]) -> dict[str, int]:
    """Which of `wanted` are objects in the store's bucket, with their sizes."""
    if not wanted:
        return {}
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {
        item["Key"]: int(item["Size"])
        for page in pages
        for item in page.get("Contents", [])
        if item["Key"] in wanted
    }


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
