-- Basket size: how many orders have 1, 2, 3, ... lines, with their units and sales (cancellations excluded).
WITH baskets AS (
    SELECT
        invoice_no,
        count(*) AS lines,
        sum(quantity) AS units,
        sum(line_amount) AS order_value
    FROM order_lines
    WHERE NOT is_cancellation
    GROUP BY invoice_no
)
SELECT
    lines AS basket_lines,
    count(*) AS orders,
    sum(units) AS units,
    sum(order_value) AS sales
FROM baskets
GROUP BY lines
ORDER BY basket_lines
