-- Close rate by month and channel: of the qualified leads created in the month, the percent
-- that became customers (at any time). Grouped by day first (created_at::DATE, cheaper per row
-- than truncating a TIMESTAMP to its month), then the few thousand day totals cut into months.
SELECT date_trunc('month', day)::DATE AS period, channel,
       100 * sum(closed) / sum(leads) AS close_rate
FROM (SELECT created_at::DATE AS day, channel,
             count(*) FILTER (WHERE customer_at IS NOT NULL) AS closed, count(*) AS leads
      FROM leads
      WHERE is_qualified AND created_at IS NOT NULL
      GROUP BY ALL)
GROUP BY ALL
ORDER BY period, channel
