-- Shape tried: the opportunities within the window counted per lead first, then every qualified
-- lead joined to those counts (LEFT JOIN of 0.5M leads to 81k counts) and grouped by month.
WITH
converted AS (
    SELECT o.lead_id, count(*) AS opportunities
    FROM opportunities AS o
    JOIN leads AS l ON l.lead_id = o.lead_id
    WHERE l.is_qualified
      AND o.created_at >= l.created_at AND o.created_at <= l.created_at + INTERVAL 30 DAY
    GROUP BY o.lead_id
)
SELECT date_trunc('month', l.created_at)::DATE AS period, l.channel,
       100 * coalesce(sum(c.opportunities), 0) / count(*) AS lead_to_opportunity_30d
FROM leads AS l
LEFT JOIN converted AS c ON c.lead_id = l.lead_id
WHERE l.is_qualified AND l.created_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
