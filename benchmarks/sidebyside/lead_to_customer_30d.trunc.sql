-- Shape tried: each TIMESTAMP truncated to its month on every row (no day totals first);
-- otherwise as lead_to_customer_30d.sql.
SELECT date_trunc('month', created_at)::DATE AS period, channel,
       100 * count(*) FILTER (WHERE customer_at::DATE - created_at::DATE <= 30) / count(*) AS lead_to_customer_30d
FROM leads
WHERE is_qualified AND created_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
