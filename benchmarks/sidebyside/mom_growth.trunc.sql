-- Shape tried: each TIMESTAMP truncated to its month on every row (no day totals first);
-- otherwise as mom_growth.sql.
WITH monthly AS (
    SELECT date_trunc('month', created_at)::DATE AS period, channel, count(*) AS leads
    FROM leads
    WHERE is_qualified AND created_at IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel, 100 * (leads - previous) / nullif(previous, 0) AS lead_growth_rate
FROM (SELECT *,
             CASE WHEN lag(period) OVER by_month = period - INTERVAL 1 MONTH
                  THEN lag(leads) OVER by_month ELSE 0 END AS previous
      FROM monthly
      WINDOW by_month AS (PARTITION BY channel ORDER BY period))
ORDER BY period, channel
