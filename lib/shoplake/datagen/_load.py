"""``load``: the dataset the notebooks use — the real Online Retail file when one is given, else the synthetic shop."""

from __future__ import annotations

import logging
import os

from shoplake import config
from shoplake.datagen._dataset import Dataset, _check, code_fingerprint, dataset_dir, generate
from shoplake.datagen._real import load_retail_dataset

log = logging.getLogger(__name__)


def load(
    scale: str | None = None,
    seed: int | None = None,
    retail_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """The dataset for ``scale``/``seed`` (defaults from ``config.settings()``), generated on first use.

    With ``retail_file`` (or the environment variable ``SHOPLAKE_RETAIL_FILE``) the real Online Retail file
    is loaded instead (see :func:`load_retail_dataset`; it has no ground truth and no access log).
    """
    retail_file = retail_file or config.settings().retail_file
    if retail_file:
        return load_retail_dataset(retail_file)
    settings = config.settings()
    scale = scale or settings.scale
    seed = settings.seed if seed is None else seed
    _check(scale, seed)
    directory = dataset_dir(scale, seed)
    if (directory / "manifest.json").exists():
        existing = Dataset(directory)
        if existing.manifest.get("code") == code_fingerprint():
            return existing
        log.info("%s was made by another version of the generator: regenerating", directory)
        return generate(scale, seed, progress=progress, replace=True)
    return generate(scale, seed, progress=progress, replace=False)
