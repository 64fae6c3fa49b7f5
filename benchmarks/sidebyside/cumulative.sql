-- Qualified leads to date (all time) by month and channel: a running sum over the monthly
-- totals. Leads grouped by day first, the day totals cut into months.
WITH monthly AS (
    SELECT date_trunc('month', day)::DATE AS period, channel, sum(leads) AS leads
    FROM (SELECT created_at::DATE AS day, channel, count(*) AS leads
          FROM leads
          WHERE is_qualified AND created_at IS NOT NULL
          GROUP BY ALL)
    GROUP BY ALL
)
SELECT period, channel, sum(leads) OVER (PARTITION BY channel ORDER BY period) AS leads_to_date
FROM monthly
ORDER BY period, channel
