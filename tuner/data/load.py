"""`load_dataset`: a dataset by name -> tensors, from the cache or decoded from its files once.

Files are looked for in the data dir, downloaded with torchvision where they are absent and a
network is there, decoded by the dataset's registry entry, and cached (`cache`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from tuner.data import cache
from tuner.data.imagefolder import DEFAULT_IMAGEFOLDER_SIZE, decode_imagefolder, find_images
from tuner.data.registry import DATASETS, Source, dataset_name_problem, imagefolder_path
from tuner.data.sets import Dataset
from tuner.data.splits import hold_out
from tuner.errors import TunerError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = 15.0  # seconds a download may wait for a connection or for data


def default_data_dir() -> Path:
    """`TUNER_DATA_DIR`, else ~/.cache/tuner/data."""
    return Path(os.environ.get("TUNER_DATA_DIR", Path.home() / ".cache" / "tuner" / "data"))


def default_cache_dir() -> Path:
    """`TUNER_CACHE_DIR`, else ~/.cache/tuner/tensors."""
    return Path(os.environ.get("TUNER_CACHE_DIR", Path.home() / ".cache" / "tuner" / "tensors"))


def _download(source: Source, name: str, data_dir: Path) -> list[Path] | None:
    """Try torchvision's download; return the source files, or None when offline.

    The files are downloaded into a temporary folder and moved into `data_dir` only once
    both splits are there: a failed attempt leaves nothing (no empty `FashionMNIST/raw/`) in
    a folder the user named.
    """
    import torchvision

    dataset_class = getattr(torchvision.datasets, source.torchvision_class or "", None)
    if dataset_class is None:
        return None
    log.info("%s not found in %s; trying to download it with torchvision", name, data_dir)
    # torchvision opens URLs without a timeout: where packets are dropped instead of refused
    # (firewalls, air-gapped networks) a connect would hang for minutes. The default socket
    # timeout bounds every connect and read; it is restored right after.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="tuner-download-") as staging:
        try:
            for train in (True, False):
                dataset_class(root=staging, train=train, download=True)
        except Exception as exc:  # offline, DNS failure, HTTP error: all mean "not available"
            log.info("download of %s failed: %s", name, " ".join(str(exc).split()))
            return None
        finally:
            socket.setdefaulttimeout(previous_timeout)
        if source.find(Path(staging)) is None:
            return None
        data_dir.mkdir(parents=True, exist_ok=True)
        for entry in Path(staging).iterdir():
            if entry.is_dir():
                shutil.copytree(entry, data_dir / entry.name, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, data_dir / entry.name)
    return source.find(data_dir)


def _find_sources(name: str, source: Source, data_dir: Path, download: bool) -> list[Path]:
    """The dataset's files in `data_dir`, downloaded there if allowed; TunerError if absent."""
    sources = source.find(data_dir) if data_dir.is_dir() else None
    if sources is None and download:
        sources = _download(source, name, data_dir)
    if sources is None:
        raise TunerError(
            f"dataset {name!r} not found in {data_dir}: expected "
            f"{source.expected.replace('DIR', str(data_dir))}. Download it on a machine with "
            "internet access and pass --data-dir (or set TUNER_DATA_DIR)"
        )
    return sources


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    image_size: int = DEFAULT_IMAGEFOLDER_SIZE,
    download: bool = True,
) -> Dataset:
    """Load a dataset by name (see registry.DATASETS, or imagefolder:PATH).

    Decoded tensors are cached in `cache_dir`; the cache is reused while the source files are
    unchanged. Raises TunerError saying where the files are expected when they are missing.
    """
    problem = dataset_name_problem(name)
    if problem is not None:
        raise TunerError(problem)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    folder = imagefolder_path(name)
    source = DATASETS.get(name)
    if source is not None and not source.cached:
        return Dataset(name, *source.decode([]))
    if folder is not None:
        sources = find_images(folder)
        location, extra, num_classes = folder, f"size={image_size}", None
    else:
        assert source is not None  # dataset_name_problem let only these two kinds through
        sources = _find_sources(name, source, data_dir, download)
        location, extra, num_classes = data_dir, "", source.num_classes

    path = cache.cache_path(cache_dir, name, location, extra, sources)
    if path.is_file():
        cached = cache.read_cached(path, name, num_classes)
        if cached is not None:
            log.debug("loaded %s from cache %s", name, path)
            return cached

    if folder is not None:
        train, test, class_names = decode_imagefolder(folder, image_size)
        if test is None:
            train, test = hold_out(train)
    else:
        train, test, class_names = DATASETS[name].decode(sources)
    dataset = Dataset(name, train, test, class_names)
    try:
        cache.write_cached(path, dataset)
    except OSError as exc:  # a read-only cache dir slows the next start but breaks nothing
        log.warning("could not write dataset cache %s: %s", path, exc)
    else:
        cache.remove_outdated(path, name, extra, sources, builtin=folder is None)
    return dataset
