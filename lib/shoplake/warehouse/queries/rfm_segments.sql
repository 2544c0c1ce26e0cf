-- RFM segments: each known customer scored on Recency (days since last order, relative to the day after the
-- last order in the lake), Frequency (orders) and Monetary value (sales), then named by fixed, documented rules.
WITH per_customer AS (
    SELECT
        customer_id,
        max(CAST(order_date AS date)) AS last_order,
        count(DISTINCT invoice_no) AS frequency,
        sum(line_amount) AS monetary
    FROM order_lines
    WHERE NOT is_cancellation AND customer_id IS NOT NULL
    GROUP BY customer_id
),
reference AS (
    SELECT date_add('day', 1, max(CAST(order_date AS date))) AS as_of
    FROM order_lines
),
scored AS (
    SELECT
        p.customer_id,
        date_diff('day', p.last_order, r.as_of) AS recency_days,
        p.frequency,
        p.monetary
    FROM per_customer AS p
    CROSS JOIN reference AS r
)
SELECT
    CASE
        WHEN recency_days <= 30 AND frequency >= 4 THEN 'champions'
        WHEN frequency >= 4 THEN 'loyal'
        WHEN recency_days <= 30 AND frequency = 1 THEN 'new'
        WHEN recency_days <= 30 THEN 'promising'
        WHEN recency_days > 90 AND frequency >= 2 THEN 'at risk'
        WHEN recency_days > 90 THEN 'lost'
        ELSE 'needs attention'
    END AS segment,
    count(*) AS customers,
    sum(frequency) AS orders,
    sum(monetary) AS sales,
    min(recency_days) AS min_recency_days,
    max(recency_days) AS max_recency_days
FROM scored
GROUP BY 1
ORDER BY sales DESC, segment
