-- Revenue by country: net revenue (sales minus cancellations), orders and known customers per country.
SELECT
    country,
    count(DISTINCT CASE WHEN NOT is_cancellation THEN invoice_no END) AS orders,
    count(DISTINCT customer_id) AS customers,
    sum(line_amount) AS net_revenue
FROM order_lines
GROUP BY country
ORDER BY net_revenue DESC, country
