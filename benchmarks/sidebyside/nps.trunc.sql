-- Shape tried: one grouped scan, each TIMESTAMP truncated to its month on every row. As fast as
-- the day totals at 70k rows (1M leads), 1.25x slower at 700k (10M leads).
SELECT date_trunc('month', responded_at)::DATE AS period, channel,
       100 * (count(*) FILTER (WHERE score >= 9) - count(*) FILTER (WHERE score <= 6)) / count(*) AS nps
FROM nps_responses
WHERE responded_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
