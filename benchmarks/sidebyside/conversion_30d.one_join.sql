-- Shape tried: one scan of leads joined to the opportunities within the window, each lead
-- counted once with count(DISTINCT lead_id) (the join repeats a lead per opportunity).
SELECT date_trunc('month', l.created_at)::DATE AS period, l.channel,
       100 * count(o.lead_id) / count(DISTINCT l.lead_id) AS lead_to_opportunity_30d
FROM leads AS l
LEFT JOIN opportunities AS o
       ON o.lead_id = l.lead_id
      AND o.created_at >= l.created_at AND o.created_at <= l.created_at + INTERVAL 30 DAY
WHERE l.is_qualified AND l.created_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
