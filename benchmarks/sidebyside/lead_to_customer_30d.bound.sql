-- Shape tried: the 30-day condition as one comparison against a bound computed from the
-- creation day (customer_at < created_at::DATE + 31), instead of subtracting two dates.
SELECT date_trunc('month', created_at)::DATE AS period, channel,
       100 * count(*) FILTER (WHERE customer_at < created_at::DATE + 31) / count(*) AS lead_to_customer_30d
FROM leads
WHERE is_qualified AND created_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
