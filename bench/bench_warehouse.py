"""Warehouse benchmark: the Athena query set on DuckDB over the lake vs pandas on the same data; PostgreSQL load rate.

Run with ``python -m bench --only warehouse [--scale small]``. Figures are ratios measured side by side in one run:
- query set end to end (each engine reads the curated lake from the emulator's S3, then computes every query);
- query set compute only (both engines on the same data already in memory);
- star-schema load rate into the embedded PostgreSQL (rows/s), beside the lake read that feeds it.
"""

from __future__ import annotations

import os
import time


def _timed(fn, *args, **kwargs):
    began = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - began


def main(scale: str = "full", seed: int = 42) -> dict:
    os.environ["SHOPLAKE_PREFIX"] = f"bench-wh-{scale}"[:20]
    from shoplake import config, datagen, infra, lake, warehouse
    from shoplake.warehouse import _athena, _reference

    config.clear_caches()
    infra.apply(
        [
            r
            for r in infra.load_spec()
            if r.type in {"s3_bucket", "iam_role", "firehose_delivery_stream", "glue_database"}
        ]
    )
    dataset = datagen.load(scale=scale, seed=seed)
    n_events = len(dataset.order_lines)
    figures: dict = {"scale": scale, "order_events": n_events}
    if not lake.curated_exists("order_lines") or len(lake.read_curated("products", ["stock_code"])) == 0:
        lake._delete_prefix(lake.RAW_ORDERS_PREFIX)
        delivered, t_deliver = _timed(lake.deliver_orders, dataset.order_lines, progress=True)
        counts, t_curate = _timed(lake.curate_orders, progress=True)
        print(
            f"delivered {delivered.delivered:,} events via Firehose in {t_deliver:.1f} s "
            f"({delivered.delivered / t_deliver:,.0f}/s); curated {counts.curated:,} lines in {t_curate:.1f} s "
            f"({counts.delivered / t_curate:,.0f} lines/s)"
        )
    warehouse.crawl()

    # --- end to end: each engine reads the lake, then runs the whole query set
    results, t_duck = _timed(warehouse.run_query_set)

    def pandas_query_set():
        lines = lake.read_curated_order_lines()
        products = lake.read_curated("products")
        prepared = _reference.prepare(lines)
        return (
            {
                name: _reference.run_reference(name, prepared, products, prepared=True)
                for name in warehouse.list_queries()
            },
            lines,
            products,
        )

    (expected, lines, products), t_pandas = _timed(pandas_query_set)
    rows = sum(len(r) for r in results.values())
    assert all(len(results[n]) == len(expected[n]) for n in results), "DuckDB and pandas disagree on row counts"
    print(
        f"query set end to end ({len(results)} queries, {len(lines):,} order lines): DuckDB on the lake "
        f"{t_duck:.2f} s, pandas (read lake + compute) {t_pandas:.2f} s -> DuckDB {t_pandas / t_duck:.1f}x"
    )

    # --- compute only: the same in-memory data for both
    import pyarrow as pa

    from shoplake.lake import ORDER_LINE_TYPES, PRODUCT_TYPES, arrow_type

    local = _athena.local_connection()
    for name, frame, types in (("order_lines", lines, ORDER_LINE_TYPES), ("products", products, PRODUCT_TYPES)):
        schema = pa.schema([(c, arrow_type(t)) for c, t in types.items()])
        local.con.register(name, pa.Table.from_pandas(frame[list(types)], schema=schema, preserve_index=False))
        local.attached.add(name)

    def duck_set():
        return {n: _athena.run_query(n, local) for n in warehouse.list_queries()}

    prepared, t_prepare = _timed(_reference.prepare, lines)

    def pandas_set():
        return {n: _reference.run_reference(n, prepared, products, prepared=True) for n in warehouse.list_queries()}

    duck_set(), pandas_set()  # warm-up: imports, sqlglot translation cache, first-call allocations
    t_duck_mem = min(_timed(duck_set)[1] for _ in range(3))
    t_pandas_mem = min(_timed(pandas_set)[1] for _ in range(3))
    print(
        f"query set compute only (best of 3, warm): DuckDB {t_duck_mem:.2f} s, pandas {t_pandas_mem:.2f} s "
        f"(+{t_prepare:.2f} s to prepare cents) -> DuckDB {t_pandas_mem / t_duck_mem:.1f}x"
    )

    # --- warehouse load
    frames, t_read = _timed(lambda: warehouse.build_star(*_read_lake()))
    load, t_load = _timed(warehouse.load_warehouse, frames)
    print(
        f"PostgreSQL star-schema load: {load.total_rows:,} rows in {t_load:.1f} s = {load.rows_per_s:,.0f} rows/s "
        f"(reading + shaping them from the lake: {t_read:.1f} s, {load.total_rows / t_read:,.0f} rows/s; "
        f"load/read rate ratio {t_read / t_load:.2f})"
    )
    figures.update(
        query_rows=rows,
        duckdb_s=t_duck,
        pandas_s=t_pandas,
        end_to_end_ratio=t_pandas / t_duck,
        duckdb_mem_s=t_duck_mem,
        pandas_mem_s=t_pandas_mem,
        compute_ratio=t_pandas_mem / t_duck_mem,
        load_rows=load.total_rows,
        load_s=t_load,
        load_rows_per_s=load.rows_per_s,
    )
    return figures


def _read_lake():
    from shoplake.warehouse._redshift import read_lake_tables

    return read_lake_tables()


if __name__ == "__main__":
    main()
