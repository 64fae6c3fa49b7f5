-- Ad spend over the trailing 30 days (the day and the 29 before) by day and channel, on the
-- days with spend rows: a RANGE window over the daily totals.
WITH daily AS (
    SELECT spend_date AS period, channel, sum(spend) AS spend
    FROM ad_spend
    WHERE spend_date IS NOT NULL
    GROUP BY ALL
)
SELECT period, channel,
       sum(spend) OVER (PARTITION BY channel ORDER BY period
                        RANGE BETWEEN INTERVAL 29 DAY PRECEDING AND CURRENT ROW) AS spend_30d
FROM daily
ORDER BY period, channel
