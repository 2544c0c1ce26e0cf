"""Product recommendations: Spark ALS on the curated lake, evaluated against baselines, served from DynamoDB.

Verbs: ``train`` (Spark ``local[2]`` here, an EMR step on aws: chosen once by the target), ``compare_models``,
``recommendations_for``; the Spark job itself is ``als_job.py`` (a plain ``spark-submit`` script; ``run_job`` runs
it in-process).
"""

from shoplake.recommend.als_job import JobConfig, read_report, spark_session
from shoplake.recommend.als_job import run as run_job
from shoplake.recommend.baselines import compare_models, implicit_params_from, most_popular
from shoplake.recommend.evaluate import evaluate_ranking
from shoplake.recommend.serve import beside_history, check_served, publish, recommendations_for
from shoplake.recommend.train import open_trainer, publish_to_lake, run_dir, train, train_local

__all__ = [
    "beside_history",
    "check_served",
    "JobConfig",
    "compare_models",
    "evaluate_ranking",
    "implicit_params_from",
    "most_popular",
    "open_trainer",
    "publish",
    "publish_to_lake",
    "read_report",
    "recommendations_for",
    "run_dir",
    "run_job",
    "spark_session",
    "train",
    "train_local",
]
