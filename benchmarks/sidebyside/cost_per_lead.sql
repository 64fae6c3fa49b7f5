-- Cost per lead by month and channel: ad spend over qualified leads created in the month.
-- Each table is reduced to (month, channel) totals, stacked with UNION ALL BY NAME and folded
-- with one GROUP BY (no key table, no joins). Leads (a TIMESTAMP) are grouped by day first and
-- the day totals cut into months. Rows: every (month, channel) with spend or leads.
WITH
spend AS (
    SELECT date_trunc('month', spend_date)::DATE AS period, channel, sum(spend) AS spend
    FROM ad_spend
    WHERE spend_date IS NOT NULL
    GROUP BY ALL
),
created AS (
    SELECT date_trunc('month', day)::DATE AS period, channel, sum(leads) AS leads
    FROM (SELECT created_at::DATE AS day, channel, count(*) AS leads
          FROM leads
          WHERE is_qualified AND created_at IS NOT NULL
          GROUP BY ALL)
    GROUP BY ALL
)
SELECT period, channel,
       coalesce(sum(spend), 0) / nullif(coalesce(sum(leads), 0), 0) AS cost_per_lead
FROM (SELECT * FROM spend UNION ALL BY NAME SELECT * FROM created)
GROUP BY period, channel
ORDER BY period, channel
