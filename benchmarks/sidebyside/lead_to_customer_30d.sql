-- Percent of the month's qualified leads that became customers within 30 calendar days of
-- creation (days_between = whole calendar days between the two dates). Grouped by day first
-- (the creation day is computed once per row and reused by the condition), then cut into months.
SELECT date_trunc('month', day)::DATE AS period, channel,
       100 * sum(fast) / sum(leads) AS lead_to_customer_30d
FROM (SELECT day, channel,
             count(*) FILTER (WHERE customer_at::DATE - day <= 30) AS fast, count(*) AS leads
      FROM (SELECT created_at::DATE AS day, channel, customer_at
            FROM leads
            WHERE is_qualified AND created_at IS NOT NULL)
      GROUP BY ALL)
GROUP BY ALL
ORDER BY period, channel
