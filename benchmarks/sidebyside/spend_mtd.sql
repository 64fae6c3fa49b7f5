-- Ad spend month to date by day and channel: a running sum restarting each month.
WITH daily AS (
    SELECT spend_date AS period, channel, sum(spend) AS spend
    FROM ad_spend
    WHERE spend_date IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel,
       sum(spend) OVER (PARTITION BY channel, date_trunc('month', period) ORDER BY period) AS spend_mtd
FROM daily
ORDER BY period, channel
