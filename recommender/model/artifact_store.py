"""Where published model versions live: a directory, or an S3-compatible object store with a local cache.

Both stores keep the layout of :mod:`recommender.model.artifacts`: one folder (or key prefix) per version
holding ``meta.json``, ``arrays.npz`` and any extra files (an ANN index); meta.json records the SHA-256
of every other file and a checksum of itself. This module moves those files around; it never computes
or checks a digest of its own (``artifacts`` does: ``parse_meta``, ``expected_files``, ``file_sha256``).

The trainer, every serving process's watcher and the first-run bootstrap use one interface,
:class:`ArtifactStore`, built from the settings by :func:`artifact_store_from_settings`:

- ``MODEL_STORE`` unset: :class:`LocalArtifactStore` on ``MODEL_DIR`` (a directory shared by trainer and
  app, as before this module existed).
- ``MODEL_STORE=s3://bucket/prefix``: :class:`S3ArtifactStore`; ``MODEL_DIR`` is then only the local
  cache of versions (the trainer's published copies and the watchers' downloads).

What a reader of the object store may rely on (S3ArtifactStore):

1. ``publish`` writes the version locally first (``artifacts.publish_model``: digests into meta.json,
   temporary name, rename), uploads every file but meta.json, checks that each stored object has the
   local file's size, and uploads meta.json last. A version without meta.json is incomplete: it is
   never listed, and ``fetch`` refuses it.
2. The caller moves the pointer (``store.jobs.publish_version``) only after ``publish`` returned.
3. ``fetch`` downloads meta.json, verifies its own checksum, downloads each file it lists into a
   temporary directory inside the cache, verifies each SHA-256, and renames the directory into place.
   The cache only ever holds complete, verified versions; several processes sharing one cache may race
   to fetch the same version (the first rename wins, the others discard their copy).
4. ``LFMRecommender.load`` verifies the digests once more when the watcher loads the version.

A missing or damaged object raises ArtifactError (the watcher logs the version and skips it for good);
a store that cannot be reached raises ArtifactStoreUnavailableError (the watcher retries next round).
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import ArtifactError, ArtifactStoreUnavailableError
from .artifacts import META, expected_files, file_sha256, parse_meta, publish_model, read_meta

log = logging.getLogger(__name__)

STALE_SECONDS = 3600  # a temporary directory untouched this long is the leftover of a crashed writer
_S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$")
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; the prefix may be empty.

    Raises
    ------
    ValueError
        Not ``s3://`` followed by a valid bucket name (3-63 lowercase letters, digits, dots, hyphens).
    """
    match = _S3_URL.match(url)
    if not match:
        raise ValueError(f"not an object store URL of the form s3://bucket[/prefix]: {url!r}")
    return match.group(1), (match.group(2) or "").strip("/")


def _check_version(version: str) -> None:
    """A version id names one folder: not empty, no path separator, no leading dot."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise ArtifactError(f"not a version id: {version!r}")


def _to_remove(versions: Iterable[str], keep: int, protect: Iterable[str],
               published_at: Callable[[str], float]) -> list[str]:
    """The versions past the newest ``keep`` by publish time, less the protected ones, oldest first.

    ``published_at(version)`` is the time meta.json records (``created_at``): version ids sort by the UTC
    second only, and two versions may share one. ``keep`` <= 0 keeps everything (returns []).
    """
    if keep <= 0:
        return []
    ordered = sorted(versions, key=lambda v: (published_at(v), v))
    protected = set(protect)
    return [v for v in ordered[:-keep] if v not in protected]


def _published_at(meta_of: Callable[[str], dict]) -> Callable[[str], float]:
    """``version -> meta.json's created_at``; a version whose meta.json is unreadable sorts as the oldest."""
    def published_at(version: str) -> float:
        try:
            return float(meta_of(version).get("created_at", float("-inf")))
        except (ArtifactError, TypeError, ValueError):
            return float("-inf")
    return published_at


class ArtifactStore(abc.ABC):
    """Where model versions are published and where serving processes get them from.

    Attributes
    ----------
    root : Path
        The local directory that ``fetch`` returns versions in (``root / version``): MODEL_DIR.
    location : str
        Where versions are published, for messages (a path or an ``s3://`` URL).
    retention : int
        Versions ``prune`` keeps by default (MODEL_RETENTION); 0 keeps all.
    """

    root: Path
    location: str
    retention: int = 0

    @abc.abstractmethod
    def publish(self, model, extra: dict | None = None, extra_files: dict[str, Callable] | None = None,
                version: str | None = None) -> str:
        """Publish ``model`` (anything with ``to_arrays()``) as a new version and return its id.

        ``extra`` goes into meta.json; ``extra_files`` maps a file name to a function that writes it given
        its path (see ``artifacts.publish_model``). When this returns, readers can fetch the whole version;
        moving the pointer (``jobs.publish_version``) is the caller's next step.

        Raises
        ------
        ArtifactError
            The version exists already, or the store kept something other than what was sent.
        ArtifactStoreUnavailableError
            The object store could not be reached (nothing was made visible to readers).
        """

    @abc.abstractmethod
    def fetch(self, version: str) -> Path:
        """A local directory ``root / version`` holding the complete version (downloaded if needed).

        Raises
        ------
        ArtifactError
            The version is not published, incomplete (meta.json or a file it lists is missing), or a file
            fails its checksum.
        ArtifactStoreUnavailableError
            The object store could not be reached.
        """

    @abc.abstractmethod
    def read_meta(self, version: str) -> dict:
        """A version's verified meta.json (without fetching its arrays); errors as :meth:`fetch`."""

    @abc.abstractmethod
    def versions(self) -> list[str]:
        """Ids of the complete versions in the store, sorted by id (UTC time to the second, then random)."""

    @abc.abstractmethod
    def prune(self, keep: int | None = None, protect: Iterable[str] = ()) -> list[str]:
        """Delete all but the newest ``keep`` versions (by the publish time meta.json records; default:
        ``retention``; 0 = none), never those in ``protect`` (the published one, the one just published),
        from the store and the local cache. Returns the ids deleted from the store, oldest first."""

    @abc.abstractmethod
    def prune_cache(self, keep: int | None = None, protect: Iterable[str] = ()) -> list[str]:
        """As :meth:`prune`, for the local cache only (what a serving process may do); [] when the
        directory is the store itself."""

    @abc.abstractmethod
    def check(self) -> None:
        """Return when the store answers; raise ArtifactStoreUnavailableError otherwise."""


class LocalArtifactStore(ArtifactStore):
    """Versions as directories ``model_dir/<version>/`` (shared by the trainer and every serving process).

    Parameters
    ----------
    model_dir : path
        MODEL_DIR; created on the first publish.
    retention : int
        Versions ``prune`` keeps by default; 0 keeps all.
    """

    def __init__(self, model_dir: str | os.PathLike, retention: int = 0) -> None:
        self.root = Path(model_dir)
        self.location = str(self.root)
        self.retention = retention

    def publish(self, model, extra=None, extra_files=None, version=None) -> str:
        return publish_model(model, self.root, version=version, extra=extra, extra_files=extra_files)

    def fetch(self, version: str) -> Path:
        _check_version(version)
        path = self.root / version
        if not path.is_dir():
            raise ArtifactError(f"version {version} is not in {self.root}")
        return path

    def read_meta(self, version: str) -> dict:
        return read_meta(self.fetch(version))

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / META).is_file())

    def prune(self, keep: int | None = None, protect: Iterable[str] = ()) -> list[str]:
        keep = self.retention if keep is None else keep
        gone = _to_remove(self.versions(), keep, protect, _published_at(self.read_meta))
        for version in gone:
            _remove_dir(self.root / version)
        if keep > 0:
            _remove_stale_temporaries(self.root)
        return gone

    def prune_cache(self, keep: int | None = None, protect: Iterable[str] = ()) -> list[str]:
        return []  # the directory is the store: the trainer prunes it

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


def _remove_dir(path: Path) -> None:
    """Delete a version directory so that readers see it whole or not at all (rename away, then delete)."""
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:  # another process pruned it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    """Delete ``.tmp-*`` and ``.trash-*`` directories older than STALE_SECONDS (crashed writers)."""
    cutoff = time.time() - STALE_SECONDS
    for path in root.glob(".t*-*"):
        try:
            if path.name.startswith((".tmp-", ".trash-")) and path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Turn boto3's errors into ArtifactStoreUnavailableError (ArtifactError passes through)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError, S3UploadFailedError

    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error, RetriesExceededError, S3DownloadFailedError,
            S3UploadFailedError) as exc:
        raise ArtifactStoreUnavailableError(f"{what}: {exc}") from None


def _not_found(exc: Exception) -> bool:
    """True for a ClientError that says the object (or key) does not exist."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) in _NOT_FOUND


class S3ArtifactStore(ArtifactStore):
    """Versions as objects ``<prefix>/<version>/<file>`` in an S3-compatible bucket, cached in ``cache_dir``.

    Parameters
    ----------
    bucket, prefix : str
        Where versions go (``prefix`` may be empty: versions at the top of the bucket).
    cache_dir : path
        MODEL_DIR: the local cache, laid out like a LocalArtifactStore; shared safely by processes.
    client : boto3 S3 client
        e.g. :func:`s3_client` (endpoint, region and credentials from the AWS variables).
    retention : int
        Versions ``prune`` keeps by default, in the bucket and in the cache; 0 keeps all.
    """

    def __init__(self, bucket: str, prefix: str, cache_dir: str | os.PathLike, client, retention: int = 0) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.retention = retention
        self.cache = LocalArtifactStore(cache_dir, retention)
        self.root = self.cache.root
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._metas: dict[str, dict] = {}  # version -> verified meta.json (immutable once published)

    # ------------------------------------------------------------------ keys

    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def key(self, version: str, name: str) -> str:
        """The object key of one file of a version."""
        return f"{self._base()}{version}/{name}"

    def _listing(self) -> dict[str, list[str]]:
        """Every version folder in the bucket (complete or not) -> the keys of its files."""
        found: dict[str, list[str]] = defaultdict(list)
        base = self._base()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                version, sep, name = obj["Key"][len(base):].partition("/")
                if sep and name and "/" not in name and not version.startswith("."):
                    found[version].append(obj["Key"])
        return found

    # ------------------------------------------------------------------ the interface

    def publish(self, model, extra=None, extra_files=None, version=None) -> str:
        version = self.cache.publish(model, extra=extra, extra_files=extra_files, version=version)
        directory = self.root / version
        meta = read_meta(directory)
        sent: list[str] = []
        try:
            with _s3_errors(f"publishing {version} to {self.location}"):
                try:
                    self.client.head_object(Bucket=self.bucket, Key=self.key(version, META))
                except Exception as exc:  # noqa: BLE001 - only "not found" lets the publish go on
                    if not _not_found(exc):
                        raise
                else:
                    raise ArtifactError(f"version {version} already exists in {self.location}")
                for name in [*expected_files(meta), META]:  # meta.json last: it makes the version visible
                    path, key = directory / name, self.key(version, name)
                    self.client.upload_file(str(path), self.bucket, key)
                    sent.append(key)
                    stored = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
                    if stored != path.stat().st_size:
                        raise ArtifactError(f"{self.location}/{version}/{name} holds {stored} bytes, "
                                            f"{path.stat().st_size} were sent")
        except BaseException:
            self._delete_quietly(sent)
            _remove_dir(directory)  # not published: the cache holds published versions only
            raise
        return version

    def _delete_quietly(self, keys: list[str]) -> None:
        """Best effort: remove what a failed publish uploaded (meta.json first; leftovers are pruned later)."""
        for key in sorted(keys, key=lambda k: not k.endswith("/" + META)):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except Exception:  # noqa: BLE001 - the store may be the thing that failed
                log.warning("could not delete %s from %s after a failed publish", key, self.location)

    def _download(self, version: str, name: str, path: Path) -> None:
        """One file of a version into ``path``; ArtifactError when the object does not exist."""
        try:
            self.client.download_file(self.bucket, self.key(version, name), str(path))
        except Exception as exc:
            if _not_found(exc):
                hint = ("not published, or its upload is incomplete" if name == META
                        else "its upload is incomplete, or the object was deleted")
                raise ArtifactError(f"{self.location}/{version}/{name} does not exist: {hint}") from None
            raise

    def fetch(self, version: str) -> Path:
        _check_version(version)
        final = self.root / version
        if (final / META).is_file():  # the cache holds only complete, verified versions
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-fetch-{version}-"))
        try:
            with _s3_errors(f"fetching {version} from {self.location}"):
                self._download(version, META, tmp / META)
                meta = parse_meta((tmp / META).read_bytes(), f"{self.location}/{version}")
                if meta.get("extra", {}).get("version", version) != version:
                    raise ArtifactError(f"{self.location}/{version}/{META} describes version "
                                        f"{meta['extra']['version']}")
                for name, digest in expected_files(meta).items():
                    self._download(version, name, tmp / name)
                    if file_sha256(tmp / name) != digest:
                        raise ArtifactError(f"{self.location}/{version}/{name} fails its checksum: "
                                            "truncated or altered")
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / META).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process of this machine fetched it first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("fetched model %s from %s in %.2fs", version, self.location, time.monotonic() - started)
        return final

    def read_meta(self, version: str) -> dict:
        _check_version(version)
        cached = self.root / version
        if (cached / META).is_file():
            return read_meta(cached)
        where = f"{self.location}/{version}"
        with _s3_errors(f"reading {where}/{META}"):
            try:
                raw = self.client.get_object(Bucket=self.bucket, Key=self.key(version, META))["Body"].read()
            except Exception as exc:
                if _not_found(exc):
                    raise ArtifactError(f"{where}/{META} does not exist: not published, or its upload is "
                                        "incomplete") from None
                raise
        return parse_meta(raw, where)

    def _meta_once(self, version: str) -> dict:
        """read_meta, remembered for this store's lifetime (pruning reads every kept version's)."""
        if version not in self._metas:
            self._metas[version] = self.read_meta(version)
        return self._metas[version]

    def versions(self) -> list[str]:
        with _s3_errors(f"listing {self.location}"):
            listing = self._listing()
        return sorted(v for v, keys in listing.items() if self.key(v, META) in keys)

    def prune(self, keep: int | None = None, protect: Iterable[str] = ()) -> list[str]:
        keep = self.retention if keep is None else keep
        if keep <= 0:
            return []
        protect = set(protect)
        with _s3_errors(f"pruning {self.location}"):
            listing = self._listing()
            complete = sorted(v for v, keys in listing.items() if self.key(v, META) in keys)
            gone = _to_remove(complete, keep, protect, _published_at(self._meta_once))
            newest = max((v for v in complete if v not in gone), default="")
            # objects of a version without meta.json, older than a kept one: an upload that crashed
            # (publishing happens under the training lock, so no upload of an older id is in flight)
            leftovers = [v for v in listing if v not in complete and v < newest and v not in protect]
            for version in gone + leftovers:
                keys = sorted(listing[version], key=lambda k: not k.endswith("/" + META))
                self.client.delete_object(Bucket=self.bucket, Key=keys[0])  # meta.json first: invisible at once
                for start in range(1, len(keys), 1000):
                    self.client.delete_objects(Bucket=self.bucket, Delete={
                        "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
        for version in gone:
            self._metas.pop(version, None)
        if leftovers:
            log.info("deleted the incomplete upload(s) %s from %s", ", ".join(sorted(leftovers)), self.location)
        self.cache.prune(keep, protect)
        return gone

    def prune_cache(self, keep: int | None = None, protect: Iterable[str] = ()) -> list[str]:
        return self.cache.prune(self.retention if keep is None else keep, protect)

    def check(self) -> None:
        try:
            with _s3_errors(f"reaching {self.location}"):
                self.client.head_bucket(Bucket=self.bucket)
        except ArtifactStoreUnavailableError as exc:
            raise ArtifactStoreUnavailableError(f"{exc} (does bucket {self.bucket} exist, and do AWS_ENDPOINT_URL "
                                                "and the credentials point at its store?)") from None


def s3_client():
    """A boto3 S3 client from the standard AWS variables (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION or
    AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or any other source of boto3's credential chain).

    With a custom endpoint (MinIO, Ceph, moto) boto3 addresses buckets by path (``http://host:port/bucket``).
    Timeouts: 5 s to connect, 60 s per read; up to 5 attempts with backoff (boto3's "standard" retries).
    """
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return boto3.session.Session().client(
        "s3", region_name=region,
        config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}))


def artifact_store_from_settings(settings, client=None) -> ArtifactStore:
    """The store the settings name: S3ArtifactStore for ``MODEL_STORE=s3://...`` (MODEL_DIR its cache),
    else LocalArtifactStore on MODEL_DIR; both keep MODEL_RETENTION versions when pruning.

    ``client`` replaces the boto3 client built from the environment (:func:`s3_client`).
    """
    if not settings.model_store:
        return LocalArtifactStore(settings.model_dir, settings.model_retention)
    bucket, prefix = parse_store_url(settings.model_store)
    return S3ArtifactStore(bucket, prefix, settings.model_dir, client if client is not None else s3_client(),
                           settings.model_retention)
