"""Product recommendations: Spark ALS on the curated lake, evaluated against baselines, served from DynamoDB.

Verbs: ``train_local`` (or ``emr.submit`` on aws), ``compare_models``, ``recommendations_for``; the Spark job
itself is ``als_job.py`` (a plain ``spark-submit`` script; ``run_job`` runs it in-process).
"""

from shoplake.recommend.als_job import JobConfig, read_report, spark_session
from shoplake.recommend.als_job import run as run_job
from shoplake.recommend.baselines import compare_models, implicit_params_from, most_popular
from shoplake.recommend.evaluate import evaluate_ranking
from shoplake.recommend.serve import publish, recommendations_for
from shoplake.recommend.train import publish_to_lake, run_dir, train_local

__all__ = [
    "JobConfig",
    "compare_models",
    "evaluate_ranking",
    "implicit_params_from",
    "most_popular",
    "publish",
    "publish_to_lake",
    "read_report",
    "recommendations_for",
    "run_dir",
    "run_job",
    "spark_session",
    "train_local",
]
