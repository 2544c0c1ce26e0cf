-- France best sellers (the original design's query): the 10 products French customers bought most units of.
SELECT
    stock_code,
    max(description) AS description,
    sum(quantity) AS units,
    sum(line_amount) AS sales
FROM order_lines
WHERE country = 'France' AND NOT is_cancellation
GROUP BY stock_code
ORDER BY units DESC, stock_code
LIMIT 10
