-- Monthly cohort retention: customers by month of first order, and how many ordered again N months later.
WITH activity AS (
    SELECT DISTINCT
        customer_id,
        date_trunc('month', CAST(order_date AS date)) AS activity_month
    FROM order_lines
    WHERE NOT is_cancellation AND customer_id IS NOT NULL
),
cohorts AS (
    SELECT customer_id, min(activity_month) AS cohort_month
    FROM activity
    GROUP BY customer_id
),
sizes AS (
    SELECT cohort_month, count(*) AS cohort_size
    FROM cohorts
    GROUP BY cohort_month
)
SELECT
    date_format(c.cohort_month, '%Y-%m') AS cohort,
    date_diff('month', c.cohort_month, a.activity_month) AS months_since_first,
    s.cohort_size,
    count(*) AS customers,
    round(CAST(count(*) AS double) / s.cohort_size, 4) AS retention
FROM activity AS a
JOIN cohorts AS c ON c.customer_id = a.customer_id
JOIN sizes AS s ON s.cohort_month = c.cohort_month
GROUP BY c.cohort_month, date_diff('month', c.cohort_month, a.activity_month), s.cohort_size
ORDER BY cohort, months_since_first
