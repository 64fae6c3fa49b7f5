-- Shape tried: each TIMESTAMP truncated to its month on every row (no day totals first);
-- otherwise as cumulative.sql.
WITH monthly AS (
    SELECT date_trunc('month', created_at)::DATE AS period, channel, count(*) AS leads
    FROM leads
    WHERE is_qualified AND created_at IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel, sum(leads) OVER (PARTITION BY channel ORDER BY period) AS leads_to_date
FROM monthly
ORDER BY period, channel
