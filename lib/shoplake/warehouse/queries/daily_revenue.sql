-- Daily revenue: sales, cancellations and net revenue per day, with the number of orders and customers.
SELECT
    order_date,
    count(DISTINCT CASE WHEN NOT is_cancellation THEN invoice_no END) AS orders,
    count(DISTINCT CASE WHEN NOT is_cancellation THEN customer_id END) AS customers,
    sum(CASE WHEN NOT is_cancellation THEN line_amount ELSE 0 END) AS sales,
    sum(CASE WHEN is_cancellation THEN line_amount ELSE 0 END) AS cancelled,
    sum(line_amount) AS net_revenue
FROM order_lines
GROUP BY order_date
ORDER BY order_date
