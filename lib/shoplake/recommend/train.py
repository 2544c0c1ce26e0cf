"""Train on the local target: copy the curated lake locally, run the ALS job in-process, publish the lists.

The lists go to DynamoDB (``recommendations``, for serving) and back to the lake as
``curated/recommendations/`` (Parquet, registered in Glue). On aws, :mod:`shoplake.recommend.emr` runs the same
script as an EMR step instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import config
from shoplake.recommend import als_job, serve

log = logging.getLogger(__name__)


def work_dir() -> Path:
    """``.shoplake/recommend/<prefix>/``: the local lake copy and the job's output of this prefix."""
    path = config.settings().home / "recommend" / config.settings().prefix
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir() -> Path:
    """Where the last local run wrote ``report.json``, the split and the lists."""
    return work_dir() / "run"


def publish_to_lake(output: str | os.PathLike[str]) -> dict[str, Any]:
    """Upload the serving lists of a finished run to ``curated/recommendations/`` and register them in Glue."""
    import awswrangler as wr

    from shoplake import lake

    lists = pd.read_parquet(Path(output) / "recommendations")
    lists["score"] = lists["score"].astype("float64")
    path = lake.curated_path("recommendations")
    database = lake.ensure_database()
    wr.s3.to_parquet(
        lists,
        path=path,
        dataset=True,
        mode="overwrite",
        database=database,
        table="recommendations",
        boto3_session=config.configure_wrangler(),
    )
    return {"path": path, "rows": len(lists), "customers": int(lists["customer_id"].nunique())}


def train_local(
    input_dir: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    spark: Any | None = None,
    publish: bool = True,
    **job_options: Any,
) -> dict[str, Any]:
    """Run the ALS job on the local target and return its report (plus where the lists went).

    ``input_dir`` defaults to a fresh local copy of the curated lake; ``job_options`` are :class:`JobConfig`
    fields (``k``, ``ranks``, ``holdout_weeks``, ...). With ``publish`` the lists go to DynamoDB and the lake.
    """
    if input_dir is None:
        from shoplake.recommend.data import local_curated_copy

        input_dir = local_curated_copy(work_dir() / "lake")
    cfg = als_job.JobConfig(input=str(input_dir), output=str(output or run_dir()), **job_options)
    report = als_job.run(
        cfg, spark=spark or als_job.spark_session(), publish=serve.publish if publish else None, show_progress=True
    )
    if publish and cfg.serve:
        report["lake"] = publish_to_lake(cfg.output)
    report["output"] = cfg.output
    return report
