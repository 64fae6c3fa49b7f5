-- Opportunities opened within 30 days of their lead's creation, per qualified lead, in percent,
-- by the lead's month and channel (a conversion counted in the base event's period). lead_id
-- is the leads table's primary key, so each opportunity has at most one lead to be attributed
-- to: a plain join, no attribution step. The matched pairs carry the lead's day and channel, so
-- they are counted by (day, channel) straight away; the leads are counted by (day, channel) on
-- their own; both are stacked and cut into months (no join of the leads to the counts).
WITH
converted AS (
    SELECT l.created_at::DATE AS day, l.channel, count(*) AS conversions
    FROM opportunities AS o
    JOIN leads AS l ON l.lead_id = o.lead_id
    WHERE l.is_qualified
      AND o.created_at >= l.created_at AND o.created_at <= l.created_at + INTERVAL 30 DAY
    GROUP BY ALL
),
created AS (
    SELECT created_at::DATE AS day, channel, count(*) AS leads
    FROM leads
    WHERE is_qualified AND created_at IS NOT NULL
    GROUP BY ALL
)
SELECT date_trunc('month', day)::DATE AS period, channel,
       100 * coalesce(sum(conversions), 0) / sum(leads) AS lead_to_opportunity_30d
FROM (SELECT * FROM converted UNION ALL BY NAME SELECT * FROM created)
GROUP BY ALL
ORDER BY period, channel
