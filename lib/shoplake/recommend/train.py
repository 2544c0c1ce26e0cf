"""Training, one verb for both targets: :func:`train` runs the ALS job where the target runs Spark.

* local: :class:`LocalTrainer` copies the curated lake to a local folder and runs ``als_job`` in-process on Spark
  ``local[2]`` (the pyspark wheel has no ``s3a``);
* aws: :class:`shoplake.recommend.emr.EmrTrainer` runs the same script as an EMR step (transient cluster, or
  ``cluster_id``) and reads its report back from S3.

The backend is chosen once, in :func:`open_trainer`. Both publish the lists to DynamoDB (``recommendations``,
for serving) and to the lake as ``curated/recommendations/`` (Parquet, registered in Glue), and return the same
report (``report.json`` of the job, plus ``output`` — a local folder holding the split the baselines compare on —,
``lake`` and ``backend``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import config
from shoplake.errors import ConfigError
from shoplake.recommend import als_job, serve
from shoplake.recommend.data import run_dir, work_dir
from shoplake.recommend.emr import EmrTrainer

log = logging.getLogger(__name__)


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


class LocalTrainer:
    """The local backend of :func:`train`: Spark ``local[2]`` in this process on a local copy of the lake."""

    name = "local-spark"

    def train(self, cluster_id: str | None = None, publish: bool = True, **job_options: Any) -> dict[str, Any]:
        """Run :func:`train_local`; ``cluster_id`` belongs to the aws target and must stay None here."""
        if cluster_id is not None:
            raise ConfigError(
                f"cluster_id={cluster_id!r} names an EMR cluster, which only the aws target uses: leave it None "
                "locally (or set SHOPLAKE_TARGET=aws)"
            )
        began = time.perf_counter()
        report = train_local(publish=publish, **job_options)
        report["backend"] = {"kind": self.name, "run": report["output"], "step_seconds": time.perf_counter() - began}
        return report


def open_trainer() -> Any:
    """The training backend of the current target (the one place it is chosen)."""
    return config.by_target(local=LocalTrainer, aws=EmrTrainer)()


def train(cluster_id: str | None = None, publish: bool = True, **job_options: Any) -> dict[str, Any]:
    """Train the ALS recommender where the target runs Spark and return the job's report.

    ``job_options`` are :class:`~shoplake.recommend.als_job.JobConfig` fields (``k``, ``ranks``, ``alphas``,
    ``reg_params``, ``iterations``, ``holdout_weeks``, ``validation_weeks``, ...). ``cluster_id`` (aws only):
    add the step to that running cluster instead of starting a transient one. ``publish``: write the serving
    lists to DynamoDB and ``curated/recommendations/``.
    """
    return open_trainer().train(cluster_id=cluster_id, publish=publish, **job_options)
