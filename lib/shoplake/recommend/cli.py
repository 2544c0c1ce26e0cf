"""``shoplake recommend``: train (Spark here or an EMR step, by target), evaluate against baselines, show a list."""

from __future__ import annotations

import json

import click

from shoplake import config
from shoplake.cli import echo_json


def _numbers(kind: type):
    def convert(ctx: click.Context, param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            return [kind(part) for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from exc

    return convert


@click.group("recommend")
def recommend() -> None:
    """Product recommendations: Spark ALS on the curated lake, served from DynamoDB."""


@recommend.command("train")
@click.option("--target", type=click.Choice(config.TARGETS), default=None, help="local (Spark here) or aws (EMR)")
@click.option("--k", type=int, default=10, show_default=True, help="recommendations per customer")
@click.option("--rank", "ranks", callback=_numbers(int), default=None, help="ALS ranks to search, e.g. 16,32")
@click.option("--alpha", "alphas", callback=_numbers(float), default=None, help="confidence alphas, e.g. 10,40")
@click.option("--reg-param", "reg_params", callback=_numbers(float), default=None, help="regParams, e.g. 0.1")
@click.option("--iterations", type=int, default=None, help="ALS iterations")
@click.option("--holdout-weeks", type=int, default=None, help="last weeks held out for evaluation")
@click.option("--validation-weeks", type=int, default=None, help="weeks before those used to pick parameters")
@click.option("--cluster-id", default=None, help="aws: add the step to this running EMR cluster (else a transient one)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def train(
    target: str | None,
    k: int,
    ranks,
    alphas,
    reg_params,
    iterations,
    holdout_weeks,
    validation_weeks,
    cluster_id: str | None,
    as_json: bool,
) -> None:
    """Train the ALS recommender and publish top-k lists (DynamoDB + curated/recommendations/)."""
    from shoplake import recommend as recommender

    if target:
        config.apply_parameters(target=target)
    options = {
        "k": k,
        "ranks": ranks,
        "alphas": alphas,
        "reg_params": reg_params,
        "iterations": iterations,
        "holdout_weeks": holdout_weeks,
        "validation_weeks": validation_weeks,
    }
    options = {key: value for key, value in options.items() if value is not None}
    config.ensure_ready()
    report = recommender.train(cluster_id=cluster_id, **options)
    if as_json:
        echo_json(report)
        return
    click.echo(f"trained by {report['backend']['kind']}; best parameters {report['best_params']}")
    for name, value in report["metrics"].items():
        click.echo(f"{name:<16} {value:.4f}")
    click.echo(f"published {report['counts']['published']} lists; lake: {report.get('lake', {}).get('path')}")


@recommend.command("cluster")
@click.option("--core-instances", type=int, default=2, show_default=True, help="core nodes (m5.xlarge)")
def cluster(core_instances: int) -> None:
    """aws: start an EMR cluster set up for the job, to reuse with --cluster-id (ends itself after 1 h idle)."""
    from shoplake.recommend import emr

    config.ensure_ready()
    cluster_id = emr.start_cluster(core_instances=core_instances)
    click.echo(f"EMR cluster {cluster_id} starting; train with --cluster-id {cluster_id}")


@recommend.command("show")
@click.argument("customer_id")
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def show(customer_id: str, k: int, as_json: bool) -> None:
    """Top-k products for CUSTOMER_ID (already-bought items excluded; unknown customers get the popular list)."""
    from shoplake.recommend.serve import recommendations_for

    config.ensure_ready()
    found = recommendations_for(customer_id, k=k)
    if as_json:
        echo_json(found)
        return
    note = "  (new customer: most popular products)" if found["cold_start"] else ""
    click.echo(f"customer {found['customer_id']} — {found['model']}, {found['generated_at']}{note}")
    for entry in found["items"]:
        click.echo(f"{entry['rank']:>3}. {entry['stock_code']:<10} {entry['description']}")


@recommend.command("evaluate")
@click.option("--k", type=int, default=None, help="cut-off (default: the k the job ran with)")
@click.option(
    "--scale",
    type=click.Choice(config.SCALES),
    default=None,
    help="synthetic dataset whose hidden taste groups to score against (default: SHOPLAKE_SCALE)",
)
@click.option("--json", "as_json", is_flag=True)
def evaluate_cmd(k: int | None, scale: str | None, as_json: bool) -> None:
    """Metrics of the last local run beside most-popular and implicit ALS on the same split."""
    from shoplake import datagen
    from shoplake.recommend import als_job, baselines
    from shoplake.recommend.train import run_dir

    report = als_job.read_report(str(run_dir()))
    k = k or int(report["k"])
    params = baselines.implicit_params_from(
        report["best_params"], report["config"]["iterations"], report["config"]["seed"]
    )
    settings = config.settings()
    truth = datagen.dataset_dir(scale or settings.scale, settings.seed)
    shop = (
        datagen.load(scale or settings.scale, settings.seed, progress=False)
        if (truth / "manifest.json").exists()
        else None
    )  # taste groups only when that synthetic dataset is on disk (never generated here)
    table = baselines.compare_models(
        run_dir(),
        k=k,
        implicit_params=params,
        customers=shop.customers if shop else None,
        products=shop.products if shop else None,
    )
    if as_json:
        echo_json(json.loads(table.to_json(orient="index")))
        return
    click.echo(table.to_string(float_format=lambda v: f"{v:.4f}"))
