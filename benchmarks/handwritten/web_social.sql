-- Web and social KPIs (catalogue rows 28-34) and NPS by month and channel: website_sessions,
-- organic_sessions, bounce_rate, avg_session_duration, social_shares, social_engagement,
-- follower_growth_rate, nps.
--
-- Followers are read on the month's last snapshot day (the latest snapshot_date of the month
-- in social_followers), summed over networks; growth compares with the previous calendar month
-- of the same channel, which counts as 0 when it has no row.
--
-- Rows: every (month, channel) with sessions, posts, follower snapshots or NPS answers.
WITH
traffic AS (
    SELECT date_trunc('month', started_at)::DATE AS period,
           channel,
           count(*)                                     AS sessions,
           count(*) FILTER (WHERE channel = 'organic')  AS organic_sessions,
           count(*) FILTER (WHERE is_bounce)            AS bounces,
           sum(duration_seconds)                        AS duration_total,
           count(duration_seconds)                      AS durations
    FROM web_sessions
    WHERE started_at IS NOT NULL
    GROUP BY ALL
),
posts AS (
    SELECT date_trunc('month', posted_at)::DATE AS period,
           channel,
           sum(shares)                                       AS shares,
           sum(likes + comments + shares + saves + clicks)   AS engagement
    FROM social_posts
    WHERE posted_at IS NOT NULL
    GROUP BY ALL
),
month_end AS (
    SELECT max(snapshot_date) AS snapshot_date
    FROM social_followers
    GROUP BY date_trunc('month', snapshot_date)
),
audience AS (
    SELECT date_trunc('month', snapshot_date)::DATE AS period,
           channel,
           sum(followers) FILTER (WHERE snapshot_date IN (SELECT snapshot_date FROM month_end)) AS followers
    FROM social_followers
    WHERE snapshot_date IS NOT NULL
    GROUP BY ALL
),
survey AS (
    SELECT date_trunc('month', responded_at)::DATE AS period,
           channel,
           count(*)                            AS responses,
           count(*) FILTER (WHERE score >= 9)  AS promoters,
           count(*) FILTER (WHERE score <= 6)  AS detractors
    FROM nps_responses
    WHERE responded_at IS NOT NULL
    GROUP BY ALL
),
monthly AS (
    SELECT period, channel,
           coalesce(sum(sessions), 0)         AS sessions,
           coalesce(sum(organic_sessions), 0) AS organic_sessions,
           coalesce(sum(bounces), 0)          AS bounces,
           sum(duration_total)                AS duration_total,
           coalesce(sum(durations), 0)        AS durations,
           coalesce(sum(shares), 0)           AS shares,
           coalesce(sum(engagement), 0)       AS engagement,
           coalesce(sum(followers), 0)        AS followers,
           coalesce(sum(responses), 0)        AS responses,
           coalesce(sum(promoters), 0)        AS promoters,
           coalesce(sum(detractors), 0)       AS detractors
    FROM (
        SELECT * FROM traffic
        UNION ALL BY NAME SELECT * FROM posts
        UNION ALL BY NAME SELECT * FROM audience
        UNION ALL BY NAME SELECT * FROM survey
    )
    GROUP BY period, channel
),
with_history AS (
    SELECT *,
           CASE WHEN lag(period) OVER by_month = period - INTERVAL 1 MONTH
                THEN lag(followers) OVER by_month ELSE 0 END AS previous_followers
    FROM monthly
    WINDOW by_month AS (PARTITION BY channel ORDER BY period)
)
SELECT
    period,
    channel,
    sessions                                                          AS website_sessions,
    organic_sessions,
    100 * bounces / nullif(sessions, 0)                               AS bounce_rate,
    duration_total / nullif(durations, 0)                             AS avg_session_duration,
    shares                                                            AS social_shares,
    engagement                                                        AS social_engagement,
    100 * (followers - previous_followers) / nullif(previous_followers, 0) AS follower_growth_rate,
    100 * (promoters - detractors) / nullif(responses, 0)             AS nps
FROM with_history
ORDER BY period, channel
