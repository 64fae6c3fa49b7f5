-- Contacts who opened an email in the trailing 30 days, by month and campaign: for each month,
-- the distinct contacts with an open from 29 days before the month's last day to that day (the
-- last day of the data for a month it cuts). Rows: the (month, campaign) pairs with sends.
-- A day d lies in the window of its own month when d >= month end - 29, and in the window of
-- the next month when d >= next month's end - 29 (a window is shorter than any month, so no
-- third month), so each distinct (day, campaign, contact) is sent to at most two months and
-- counted distinct there: an equi-join on the month, no range join.
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
