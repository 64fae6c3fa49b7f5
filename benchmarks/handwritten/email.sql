-- Email KPIs (catalogue rows 21-27) by month and channel: email_list_size, email_open_rate,
-- email_click_through_rate, inbox_placement_rate, unsubscribe_rate, list_growth_rate,
-- list_churn_rate.
--
-- The list size is the subscribers on the month's last snapshot day (the latest snapshot_date
-- of the month in email_list); unsubscribes and new subscribers are that month's daily flows
-- added up.
--
-- Rows: every (month, channel) with list snapshots or sends.
WITH
month_end AS (
    SELECT max(snapshot_date) AS snapshot_date
    FROM email_list
    GROUP BY date_trunc('month', snapshot_date)
),
list AS (
    SELECT date_trunc('month', snapshot_date)::DATE AS period,
           channel,
           sum(subscribers) FILTER (WHERE snapshot_date IN (SELECT snapshot_date FROM month_end)) AS list_size,
           sum(unsubscribes)    AS unsubscribes,
           sum(new_subscribers) AS new_subscribers
    FROM email_list
    WHERE snapshot_date IS NOT NULL
    GROUP BY ALL
),
sends AS (
    SELECT date_trunc('month', sent_at)::DATE AS period,
           channel,
           count(*)                          AS sent,
           count(*) FILTER (WHERE opened)    AS opened,
           count(*) FILTER (WHERE clicked)   AS clicked,
           count(*) FILTER (WHERE inbox)     AS inboxed,
           count(*) FILTER (WHERE bounced)   AS bounced
    FROM email_sends
    WHERE sent_at IS NOT NULL
    GROUP BY ALL
),
monthly AS (
    SELECT period, channel,
           coalesce(sum(list_size), 0)       AS list_size,
           coalesce(sum(unsubscribes), 0)    AS unsubscribes,
           coalesce(sum(new_subscribers), 0) AS new_subscribers,
           coalesce(sum(sent), 0)            AS sent,
           coalesce(sum(opened), 0)          AS opened,
           coalesce(sum(clicked), 0)         AS clicked,
           coalesce(sum(inboxed), 0)         AS inboxed,
           coalesce(sum(bounced), 0)         AS bounced
    FROM (SELECT * FROM list UNION ALL BY NAME SELECT * FROM sends)
    GROUP BY period, channel
)
SELECT
    period,
    channel,
    list_size                                                AS email_list_size,
    100 * opened / nullif(sent, 0)                           AS email_open_rate,
    100 * clicked / nullif(sent, 0)                          AS email_click_through_rate,
    100 * inboxed / nullif(sent, 0)                          AS inbox_placement_rate,
    100 * unsubscribes / nullif(list_size, 0)                AS unsubscribe_rate,
    100 * (new_subscribers - unsubscribes) / nullif(list_size, 0) AS list_growth_rate,
    100 * (unsubscribes + bounced) / nullif(list_size, 0)    AS list_churn_rate
FROM monthly
ORDER BY period, channel
