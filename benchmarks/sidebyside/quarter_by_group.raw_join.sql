-- Shape tried: the channel table joined to every raw row (as a first draft would), each table
-- then grouped by (quarter, channel_group). Same results as quarter_by_group.sql.
WITH
spend AS (
    SELECT date_trunc('quarter', a.spend_date)::DATE AS period, g.channel_group, sum(a.spend) AS spend
    FROM ad_spend AS a LEFT JOIN channels AS g ON g.channel = a.channel
    WHERE a.spend_date IS NOT NULL GROUP BY ALL
),
created AS (
    SELECT date_trunc('quarter', l.created_at)::DATE AS period, g.channel_group, count(*) AS leads
    FROM leads AS l LEFT JOIN channels AS g ON g.channel = l.channel
    WHERE l.is_qualified AND l.created_at IS NOT NULL GROUP BY ALL
),
won AS (
    SELECT date_trunc('quarter', c.acquired_at)::DATE AS period, g.channel_group, count(*) AS won
    FROM customers AS c LEFT JOIN channels AS g ON g.channel = c.channel
    WHERE c.acquired_at IS NOT NULL GROUP BY ALL
),
sales AS (
    SELECT date_trunc('quarter', o.ordered_at)::DATE AS period, g.channel_group,
           coalesce(sum(o.amount) FILTER (WHERE o.status = 'paid'), 0) AS revenue
    FROM orders AS o
    LEFT JOIN customers AS c ON c.customer_id = o.customer_id
    LEFT JOIN channels AS g ON g.channel = c.channel
    WHERE o.ordered_at IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel_group,
       coalesce(sum(spend), 0) / nullif(coalesce(sum(leads), 0), 0)      AS cost_per_lead,
       100 * coalesce(sum(won), 0) / nullif(coalesce(sum(leads), 0), 0)  AS lead_to_customer_rate,
       sum(revenue)                                                      AS revenue,
       100 * (coalesce(sum(revenue), 0) - coalesce(sum(spend), 0)) / nullif(coalesce(sum(spend), 0), 0) AS roi
FROM (SELECT * FROM spend
      UNION ALL BY NAME SELECT * FROM created
      UNION ALL BY NAME SELECT * FROM won
      UNION ALL BY NAME SELECT * FROM sales)
GROUP BY period, channel_group
ORDER BY period, channel_group
