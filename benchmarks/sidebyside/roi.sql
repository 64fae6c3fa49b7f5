-- Marketing ROI by month and channel: (paid revenue - ad spend) / ad spend, in percent. An
-- order takes its customer's channel. Orders (a TIMESTAMP) are grouped by day first, the day
-- totals cut into months. Rows: every (month, channel) with orders or spend.
WITH
sales AS (
    SELECT date_trunc('month', day)::DATE AS period, channel, sum(revenue) AS revenue
    FROM (SELECT o.ordered_at::DATE AS day, c.channel,
                 sum(o.amount) FILTER (WHERE o.status = 'paid') AS revenue
          FROM orders AS o
          LEFT JOIN customers AS c ON c.customer_id = o.customer_id
          WHERE o.ordered_at IS NOT NULL
          GROUP BY ALL)
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
