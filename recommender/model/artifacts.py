"""Model artifacts: arrays in .npz (loaded with allow_pickle=False) and metadata in JSON, with checksums.

A model directory holds ``arrays.npz`` and ``meta.json`` (what ``LFMRecommender.to_arrays`` gives; this
module knows files and checksums, not the model, which reads itself back with ``from_arrays``). meta.json records the SHA-256 of arrays.npz
and a checksum of its own canonical content, so a truncated, altered or foreign directory is refused
before anything from it is used. ``publish_model`` writes a version under a temporary name and renames
it into place, so readers never see a half-written version.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from ..errors import ArtifactError

FORMAT = "lfm-recommender"
FORMAT_VERSION = 1
ARRAYS = "arrays.npz"
META = "meta.json"
ANN_FILE = "ann.faiss"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (an index file can be hundreds of MiB)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _canonical(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def save_model(model, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` (anything with ``to_arrays()``) to ``directory`` (created if needed); meta.json last."""
    directory = Path(directory)
    arrays, model_meta = model.to_arrays()
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": time.time(),
        **model_meta,
        "arrays_sha256": _sha256(payload),
        "extra": extra or {},
    }
    meta["checksum"] = _sha256(_canonical(meta))
    _atomic_write(directory / ARRAYS, payload)
    _atomic_write(directory / META, json.dumps(meta).encode())
    return directory


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a file under a temporary name, fsync it, and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_meta(directory: str | os.PathLike) -> dict:
    """Read and verify meta.json (format, version, own checksum); raise ArtifactError otherwise."""
    path = Path(directory) / META
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a model directory: {META} is missing")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from None
    return parse_meta(raw, str(directory))


def parse_meta(raw: bytes, source: str) -> dict:
    """Verify the bytes of a meta.json (format, version, own checksum) and return the metadata.

    ``source`` names where the bytes came from (a directory, an object store key) in error messages.

    Raises
    ------
    ArtifactError
        Not JSON, not this format or format version, or the metadata fails its own checksum.
    """
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise ArtifactError(f"{source}/{META} is not valid JSON (truncated or altered?): {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{source} does not hold an {FORMAT} model (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{source} has format version {meta.get('format_version')!r}; "
                            f"this code reads version {FORMAT_VERSION}")
    claimed = meta.pop("checksum", None)
    if claimed != _sha256(_canonical(meta)):
        raise ArtifactError(f"{source}/{META} fails its checksum: the metadata was altered")
    meta["checksum"] = claimed
    return meta


def expected_files(meta: dict) -> dict[str, str]:
    """Every file a version holds besides meta.json, mapped to the SHA-256 (hex) that meta.json records.

    ``arrays.npz`` and each extra file (e.g. ``ann.faiss``); a copy of the version (a download) is
    complete and intact when each of these files exists with that digest (:func:`file_sha256`).
    """
    return {ARRAYS: meta["arrays_sha256"], **meta.get("extra", {}).get("files", {})}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    return _file_sha256(Path(path))


def load_model(directory: str | os.PathLike, cls):
    """Load and verify a model directory into ``cls.from_arrays(arrays, meta)`` (a model ready to serve).

    Raises
    ------
    ArtifactError
        Missing, truncated, altered or foreign files, or arrays that disagree with the metadata.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        payload = (directory / ARRAYS).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{directory / ARRAYS} cannot be read: {exc}") from None
    if _sha256(payload) != meta["arrays_sha256"]:
        raise ArtifactError(f"{directory / ARRAYS} fails its checksum: truncated or altered")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{directory / ARRAYS} cannot be read: {exc}") from None
    try:
        model = cls.from_arrays(arrays, meta)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{directory}: {exc}") from None
    model.artifact_meta = {k: v for k, v in meta.items()
                           if k not in ("user_ids", "item_ids", "user_feature_names", "item_feature_names",
                                        "baseline")}
    files = meta.get("extra", {}).get("files", {})
    for name, digest in files.items():
        path = directory / name
        if not path.is_file() or _file_sha256(path) != digest:
            raise ArtifactError(f"{path} is missing or fails its checksum")
    if ANN_FILE in files:
        try:
            from .ann import AnnIndex
        except ImportError:  # faiss not installed here: exact scoring still serves
            logging.getLogger(__name__).warning("%s has an ANN index but faiss is not installed; serving exact",
                                                directory)
            return model
        try:
            ann = AnnIndex.load(directory / ANN_FILE, dim=model.no_components + 1,
                                ef_search=int(meta.get("extra", {}).get("ann_ef_search", 64)))
        except (ValueError, ImportError) as exc:
            raise ArtifactError(f"{directory / ANN_FILE}: {exc}") from None
        if ann.n != model.item_space.n_ids:
            raise ArtifactError(f"{directory / ANN_FILE} indexes {ann.n} items, the model has "
                                f"{model.item_space.n_ids}")
        model.ann_index = ann
    return model


def new_version() -> str:
    """A sortable, unique version id: UTC timestamp plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def publish_model(model, model_dir: str | os.PathLike, version: str | None = None, extra: dict | None = None,
                  extra_files: dict | None = None) -> str:
    """Write ``model`` to MODEL_DIR/<version>/ atomically (temporary name, then rename); return the version.

    ``extra_files`` maps a file name to a function that writes that file given its path (e.g. an ANN
    index); each file's SHA-256 goes into the checksummed metadata and is verified on load.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version or new_version()
    final = model_dir / version
    if final.exists():
        raise ArtifactError(f"version {version} already exists in {model_dir}")
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        files = {}
        for name, write in (extra_files or {}).items():
            write(tmp / name)
            files[name] = _file_sha256(tmp / name)
        save_model(model, tmp, extra=dict(extra or {}, version=version, files=files))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version
