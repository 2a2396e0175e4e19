"""Model artifacts: arrays in .npz (loaded with allow_pickle=False) and metadata in JSON, with checksums.

A model directory holds ``arrays.npz`` and ``meta.json``. meta.json records the SHA-256 of arrays.npz
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
import pandas as pd
import scipy.sparse as sp

from .errors import ArtifactError
from .features import FeatureSpace

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
    """Write ``model`` to ``directory`` (created if needed); meta.json is written last."""
    model._require_fitted()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "user_embeddings": model.user_embeddings, "user_biases": model.user_biases,
        "item_embeddings": model.item_embeddings, "item_biases": model.item_biases,
        "baseline": model.baseline.to_numpy(dtype=np.float64),
    }
    for side in ("user", "item"):
        m = getattr(model, f"{side}_features_")
        arrays.update({f"{side}_features_data": m.data, f"{side}_features_indices": m.indices,
                       f"{side}_features_indptr": m.indptr,
                       f"{side}_features_shape": np.asarray(m.shape, dtype=np.int64)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    random_state = model.initial_random_state
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": time.time(),
        "lightfm_params": {name: getattr(model, name) for name in (
            "no_components", "k", "n", "learning_schedule", "loss", "learning_rate", "rho", "epsilon",
            "item_alpha", "user_alpha", "max_sampled")},
        "random_state": random_state if isinstance(random_state, int) else None,
        "indicators": model.indicators,
        "row_norm": model.row_norm,
        "user_ids": model.user_space.ids.tolist(),
        "item_ids": model.item_space.ids.tolist(),
        "user_feature_names": model.user_space.feature_names.tolist(),
        "item_feature_names": model.item_space.feature_names.tolist(),
        "baseline": model.baseline.to_numpy(dtype=np.float64).tolist(),
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
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not valid JSON (truncated or altered?): {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{directory} does not hold an {FORMAT} model (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory} has format version {meta.get('format_version')!r}; "
                            f"this code reads version {FORMAT_VERSION}")
    claimed = meta.pop("checksum", None)
    if claimed != _sha256(_canonical(meta)):
        raise ArtifactError(f"{path} fails its checksum: the metadata was altered")
    meta["checksum"] = claimed
    return meta


def load_model(directory: str | os.PathLike, cls):
    """Load and verify a model directory into a new ``cls`` instance ready to serve."""
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
    indicators = meta["indicators"]
    model = cls(indicators=indicators, row_norm=meta["row_norm"], random_state=meta["random_state"],
                **meta["lightfm_params"])
    from .model import INDICATORS

    users_on, items_on = INDICATORS[indicators]
    model.user_space = FeatureSpace(meta["user_ids"], meta["user_feature_names"], users_on, meta["row_norm"])
    model.item_space = FeatureSpace(meta["item_ids"], meta["item_feature_names"], items_on, meta["row_norm"])
    for side in ("user", "item"):
        shape = tuple(int(x) for x in arrays[f"{side}_features_shape"])
        matrix = sp.csr_matrix((arrays[f"{side}_features_data"], arrays[f"{side}_features_indices"],
                                arrays[f"{side}_features_indptr"]), shape=shape)
        setattr(model, f"{side}_features_", matrix)
        setattr(model, f"{side}_embeddings", arrays[f"{side}_embeddings"])
        setattr(model, f"{side}_biases", arrays[f"{side}_biases"])
    _check_shapes(model, directory)
    model._reset_optimizer_state(placeholder=True)
    if arrays["baseline"].shape != (model.item_space.n_ids,):
        raise ArtifactError(f"{directory}: baseline length does not match the items")
    model.baseline = pd.Series(arrays["baseline"], index=pd.Index(model.item_space.ids, dtype=object),
                               name="popularity")
    model.artifact_meta = {k: v for k, v in meta.items()
                           if k not in ("user_ids", "item_ids", "user_feature_names", "item_feature_names",
                                        "baseline")}
    model._reset_serving()
    model._prepare_serving()
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
            model.ann_index = AnnIndex.load(directory / ANN_FILE, dim=model.no_components + 1,
                                            ef_search=int(meta.get("extra", {}).get("ann_ef_search", 64)))
        except (ValueError, ImportError) as exc:
            raise ArtifactError(f"{directory / ANN_FILE}: {exc}") from None
        if model.ann_index.n != model.item_space.n_ids:
            raise ArtifactError(f"{directory / ANN_FILE} indexes {model.ann_index.n} items, the model has "
                                f"{model.item_space.n_ids}")
    return model


def _check_shapes(model, directory) -> None:
    """Every array must agree with the id maps and vocabularies in meta.json."""
    k = model.no_components
    for side in ("user", "item"):
        space = getattr(model, f"{side}_space")
        feats = getattr(model, f"{side}_features_")
        emb = getattr(model, f"{side}_embeddings")
        bias = getattr(model, f"{side}_biases")
        expected = (space.n_ids, space.n_columns)
        if feats.shape != expected or emb.shape != (space.n_columns, k) or bias.shape != (space.n_columns,):
            raise ArtifactError(f"{directory}: {side} arrays do not match the metadata "
                                f"(features {feats.shape} vs {expected}, embeddings {emb.shape}, biases {bias.shape})")
        if not np.isfinite(emb).all() or not np.isfinite(bias).all():
            raise ArtifactError(f"{directory}: {side} parameters contain NaN or inf")


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
