-- Shape tried: grouped by an integer month index (year * 12 + month) computed from the
-- timestamp, turned back into a date once per group.
SELECT make_date(m // 12, m % 12 + 1, 1) AS period, channel, close_rate
FROM (SELECT year(created_at) * 12 + month(created_at) - 1 AS m, channel,
             100 * count(*) FILTER (WHERE customer_at IS NOT NULL) / count(*) AS close_rate
      FROM leads
      WHERE is_qualified AND created_at IS NOT NULL
      GROUP BY ALL)
ORDER BY period, channel
