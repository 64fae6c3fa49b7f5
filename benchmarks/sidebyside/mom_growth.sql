-- Lead growth month over month by channel: 100 * (leads - last month's) / last month's. The
-- previous row counts only when it is the previous calendar month (else 0, so the growth is NULL).
-- Leads grouped by day first, the day totals cut into months.
WITH monthly AS (
    SELECT date_trunc('month', day)::DATE AS period, channel, sum(leads) AS leads
    FROM (SELECT created_at::DATE AS day, channel, count(*) AS leads
          FROM leads
          WHERE is_qualified AND created_at IS NOT NULL
          GROUP BY ALL)
    GROUP BY ALL
)
SELECT period, channel, 100 * (leads - previous) / nullif(previous, 0) AS lead_growth_rate
FROM (SELECT *,
             CASE WHEN lag(period) OVER by_month = period - INTERVAL 1 MONTH
                  THEN lag(leads) OVER by_month ELSE 0 END AS previous
      FROM monthly
      WINDOW by_month AS (PARTITION BY channel ORDER BY period))
ORDER BY period, channel
