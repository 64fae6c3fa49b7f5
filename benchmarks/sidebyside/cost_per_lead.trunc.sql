-- Shape tried: the leads' TIMESTAMP truncated to its month on every row (no day totals first).
WITH
spend AS (
    SELECT date_trunc('month', spend_date)::DATE AS period, channel, sum(spend) AS spend
    FROM ad_spend
    WHERE spend_date IS NOT NULL
    GROUP BY ALL
),
created AS (
    SELECT date_trunc('month', created_at)::DATE AS period, channel, count(*) AS leads
    FROM leads
    WHERE is_qualified AND created_at IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel,
       coalesce(sum(spend), 0) / nullif(coalesce(sum(leads), 0), 0) AS cost_per_lead
FROM (SELECT * FROM spend UNION ALL BY NAME SELECT * FROM created)
GROUP BY period, channel
ORDER BY period, channel
