-- Four KPIs by quarter and channel group (the channels table maps channel -> channel_group):
-- cost per lead, lead-to-customer rate, revenue (paid orders) and ROI. Each table is reduced to
-- (quarter, channel) totals first and only those few rows are joined to the channel table,
-- then stacked and folded with one GROUP BY. An order takes its customer's channel. The
-- TIMESTAMP tables (leads, orders) are grouped by day first, the day totals cut into quarters.
-- Revenue is NULL where the quarter and group have no orders (as the engine: no rows, no value).
WITH
spend AS (
    SELECT date_trunc('quarter', spend_date)::DATE AS period, channel, sum(spend) AS spend
    FROM ad_spend WHERE spend_date IS NOT NULL GROUP BY ALL
),
created AS (
    SELECT date_trunc('quarter', day)::DATE AS period, channel, sum(leads) AS leads
    FROM (SELECT created_at::DATE AS day, channel, count(*) AS leads
          FROM leads WHERE is_qualified AND created_at IS NOT NULL GROUP BY ALL)
    GROUP BY ALL
),
won AS (
    SELECT date_trunc('quarter', acquired_at)::DATE AS period, channel, count(*) AS won
    FROM customers WHERE acquired_at IS NOT NULL GROUP BY ALL
),
sales AS (
    SELECT date_trunc('quarter', day)::DATE AS period, channel, coalesce(sum(revenue), 0) AS revenue
    FROM (SELECT o.ordered_at::DATE AS day, c.channel,
                 sum(o.amount) FILTER (WHERE o.status = 'paid') AS revenue
          FROM orders AS o
          LEFT JOIN customers AS c ON c.customer_id = o.customer_id
          WHERE o.ordered_at IS NOT NULL
          GROUP BY ALL)
    GROUP BY ALL
),
by_channel AS (
    SELECT * FROM spend
    UNION ALL BY NAME SELECT * FROM created
    UNION ALL BY NAME SELECT * FROM won
    UNION ALL BY NAME SELECT * FROM sales
)
SELECT t.period, g.channel_group,
       coalesce(sum(t.spend), 0) / nullif(coalesce(sum(t.leads), 0), 0)      AS cost_per_lead,
       100 * coalesce(sum(t.won), 0) / nullif(coalesce(sum(t.leads), 0), 0)  AS lead_to_customer_rate,
       sum(t.revenue)                                                        AS revenue,
       100 * (coalesce(sum(t.revenue), 0) - coalesce(sum(t.spend), 0))
           / nullif(coalesce(sum(t.spend), 0), 0)                            AS roi
FROM by_channel AS t
LEFT JOIN channels AS g ON g.channel = t.channel
GROUP BY t.period, g.channel_group
ORDER BY t.period, g.channel_group
