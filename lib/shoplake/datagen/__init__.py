"""The seeded synthetic shop (orders, catalogue, customers with hidden taste groups, incidents, access log).

Public verbs: :func:`load` (generate on first use, then read), :func:`generate`, :func:`rate_profile`
(the order-rate model, for simulations), :func:`load_retail_dataset` (the real Online Retail file as a
:class:`Dataset` without ground truth). Folder layout and schemas: docs/internals.md.
"""

from shoplake.datagen._dataset import SCALE_SPECS, Dataset, dataset_dir, generate
from shoplake.datagen._load import load
from shoplake.datagen._profile import rate_profile
from shoplake.datagen._real import load_retail_dataset

__all__ = ["SCALE_SPECS", "Dataset", "dataset_dir", "generate", "load", "load_retail_dataset", "rate_profile"]
