-- Shape tried: one grouped scan, each TIMESTAMP truncated to its month
-- (date_trunc('month', created_at)::DATE on every row).
SELECT date_trunc('month', created_at)::DATE AS period, channel,
       100 * count(*) FILTER (WHERE customer_at IS NOT NULL) / count(*) AS close_rate
FROM leads
WHERE is_qualified AND created_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
