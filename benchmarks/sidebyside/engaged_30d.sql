-- Contacts who opened an email in the trailing 30 days, by month and campaign: for each month,
-- the distinct contacts with an open from 29 days before the month's last day to that day (the
-- last day of the data for a month it cuts). Rows: the (month, campaign) pairs with sends.
-- A day d lies in the window of its own month when d >= month end - 29, and in the window of
-- the next month when d >= next month's end - 29 (a window is shorter than any month, so no
-- third month). So the few hundred distinct days are placed in their one or two months once
-- (`days`), and the distinct (day, campaign, contact) opens are joined to them on the day (an
-- equi-join, no range join) and counted distinct per month.
WITH
bounds AS (SELECT max(sent_at)::DATE AS last_day FROM email_sends),
opened AS (
    SELECT DISTINCT sent_at::DATE AS day, campaign, contact_id
    FROM email_sends
    WHERE opened AND sent_at IS NOT NULL
),
days AS (   -- each day of the data with the one or two months whose window holds it
    SELECT day, period
    FROM (SELECT day, unnest([date_trunc('month', day)::DATE, (date_trunc('month', day) + INTERVAL 1 MONTH)::DATE]) AS period
          FROM (SELECT DISTINCT day FROM opened)), bounds AS b
    WHERE day BETWEEN least(last_day(period), b.last_day) - 29 AND least(last_day(period), b.last_day)
),
counted AS (
    SELECT d.period, o.campaign, count(DISTINCT o.contact_id) AS engaged
    FROM opened AS o JOIN days AS d ON d.day = o.day
    GROUP BY ALL
),
months AS (
    SELECT DISTINCT date_trunc('month', day)::DATE AS period, campaign
    FROM (SELECT DISTINCT sent_at::DATE AS day, campaign FROM email_sends WHERE sent_at IS NOT NULL)
)
SELECT m.period, m.campaign, coalesce(c.engaged, 0) AS engaged_contacts_30d
FROM months AS m
LEFT JOIN counted AS c ON c.period = m.period AND c.campaign IS NOT DISTINCT FROM m.campaign
ORDER BY m.period, m.campaign
