-- Shape tried: the months' windows as a table of (period, first_day, last_day) joined to the
-- distinct (day, campaign, contact) opens with BETWEEN (a range join), counted distinct.
WITH
last_day AS (SELECT max(sent_at)::DATE AS day FROM email_sends),
months AS (
    SELECT DISTINCT date_trunc('month', sent_at)::DATE AS period, campaign
    FROM email_sends WHERE sent_at IS NOT NULL
),
windows AS (
    SELECT DISTINCT period, least(last_day(period), l.day) AS last_day
    FROM months, last_day AS l
),
opened AS (
    SELECT DISTINCT sent_at::DATE AS day, campaign, contact_id
    FROM email_sends
    WHERE opened AND sent_at IS NOT NULL
),
counted AS (
    SELECT w.period, o.campaign, count(DISTINCT o.contact_id) AS engaged
    FROM windows AS w
    JOIN opened AS o ON o.day BETWEEN w.last_day - 29 AND w.last_day
    GROUP BY ALL
)
SELECT m.period, m.campaign, coalesce(c.engaged, 0) AS engaged_contacts_30d
FROM months AS m
LEFT JOIN counted AS c ON c.period = m.period AND c.campaign IS NOT DISTINCT FROM m.campaign
ORDER BY m.period, m.campaign
