-- Shape tried: each TIMESTAMP truncated to its month on every row (no day totals first);
-- otherwise as roi.sql.
WITH
sales AS (
    SELECT date_trunc('month', o.ordered_at)::DATE AS period, c.channel,
           sum(o.amount) FILTER (WHERE o.status = 'paid') AS revenue
    FROM orders AS o
    LEFT JOIN customers AS c ON c.customer_id = o.customer_id
    WHERE o.ordered_at IS NOT NULL
    GROUP BY ALL
),
spend AS (
    SELECT date_trunc('month', spend_date)::DATE AS period, channel, sum(spend) AS spend
    FROM ad_spend
    WHERE spend_date IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel,
       100 * (coalesce(sum(revenue), 0) - coalesce(sum(spend), 0)) / nullif(coalesce(sum(spend), 0), 0) AS roi
FROM (SELECT * FROM sales UNION ALL BY NAME SELECT * FROM spend)
GROUP BY period, channel
ORDER BY period, channel
