-- Net Promoter Score by month and channel: percent of promoters (9-10) minus percent of
-- detractors (0-6) among the month's answers. One grouped scan.
SELECT date_trunc('month', responded_at)::DATE AS period, channel,
       100 * (count(*) FILTER (WHERE score >= 9) - count(*) FILTER (WHERE score <= 6)) / count(*) AS nps
FROM nps_responses
WHERE responded_at IS NOT NULL
GROUP BY ALL
ORDER BY period, channel
