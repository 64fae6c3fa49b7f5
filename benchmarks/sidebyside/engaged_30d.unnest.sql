-- Shape tried: every distinct (day, campaign, contact) open expanded with unnest to its one or
-- two months and kept where the day is in that month's window (the data's last day cross-joined
-- as a one-row table). Counts each open row twice before filtering: slower than placing the
-- few hundred distinct days once (engaged_30d.sql).
WITH
last_day AS (SELECT max(sent_at)::DATE AS day FROM email_sends),
opened AS (
    SELECT DISTINCT sent_at::DATE AS day, campaign, contact_id
    FROM email_sends
    WHERE opened AND sent_at IS NOT NULL
),
placed AS (
    SELECT m.period, o.campaign, o.contact_id
    FROM opened AS o,
         LATERAL (SELECT unnest([date_trunc('month', o.day)::DATE,
                                 (date_trunc('month', o.day) + INTERVAL 1 MONTH)::DATE]) AS period) AS m,
         last_day AS l
    WHERE o.day >= least(last_day(m.period), l.day) - 29
      AND o.day <= least(last_day(m.period), l.day)
),
counted AS (
    SELECT period, campaign, count(DISTINCT contact_id) AS engaged
    FROM placed GROUP BY ALL
),
months AS (
    SELECT DISTINCT date_trunc('month', sent_at)::DATE AS period, campaign
    FROM email_sends WHERE sent_at IS NOT NULL
)
SELECT m.period, m.campaign, coalesce(c.engaged, 0) AS engaged_contacts_30d
FROM months AS m
LEFT JOIN counted AS c ON c.period = m.period AND c.campaign IS NOT DISTINCT FROM m.campaign
ORDER BY m.period, m.campaign
