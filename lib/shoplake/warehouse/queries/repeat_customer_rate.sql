-- Repeat-customer rate: the share of known customers with two or more orders (cancellations excluded).
WITH per_customer AS (
    SELECT customer_id, count(DISTINCT invoice_no) AS orders
    FROM order_lines
    WHERE NOT is_cancellation AND customer_id IS NOT NULL
    GROUP BY customer_id
)
SELECT
    count(*) AS customers,
    count_if(orders >= 2) AS repeat_customers,
    round(CAST(count_if(orders >= 2) AS double) / count(*), 4) AS repeat_rate
FROM per_customer
