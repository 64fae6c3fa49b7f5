-- Net Promoter Score by month and channel: percent of promoters (9-10) minus percent of
-- detractors (0-6) among the month's answers. Grouped by day first (responded_at::DATE), the
-- day totals cut into months.
SELECT date_trunc('month', day)::DATE AS period, channel,
       100 * (sum(promoters) - sum(detractors)) / sum(answers) AS nps
FROM (SELECT responded_at::DATE AS day, channel,
             count(*) FILTER (WHERE score >= 9) AS promoters,
             count(*) FILTER (WHERE score <= 6) AS detractors,
             count(*) AS answers
      FROM nps_responses
      WHERE responded_at IS NOT NULL
      GROUP BY ALL)
GROUP BY ALL
ORDER BY period, channel
