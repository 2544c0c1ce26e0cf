-- Top 20 products by sales revenue (cancellations excluded), with units sold and the number of orders.
SELECT
    l.stock_code,
    max(p.description) AS description,
    sum(l.quantity) AS units,
    count(DISTINCT l.invoice_no) AS orders,
    sum(l.line_amount) AS sales
FROM order_lines AS l
LEFT JOIN products AS p ON p.stock_code = l.stock_code
WHERE NOT l.is_cancellation
GROUP BY l.stock_code
ORDER BY sales DESC, l.stock_code
LIMIT 20
