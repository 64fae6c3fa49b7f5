-- Funnel KPIs (catalogue rows 1-13) and lead_value, by month and channel.
--
-- Written by hand the way an analyst would in DuckDB: each table is reduced to a small
-- (month, channel) aggregate, the aggregates are stacked with UNION ALL BY NAME (columns a
-- table does not have are NULL) and folded into one row per (month, channel) with a GROUP BY,
-- so there is no key table and no join between the aggregates. NULL channels (leads with lost
-- attribution) form their own group, as in GROUP BY everywhere.
--
-- Rows: every (month, channel) in which leads were created, became MQLs/SQLs/customers,
-- money was spent, customers were won, sessions started, or orders were placed.
WITH
has_opportunity AS (              -- leads with at least one opportunity, ever
    SELECT DISTINCT lead_id FROM opportunities
),
created AS (                      -- contacts by the month they were created; leads are the qualified ones
    SELECT date_trunc('month', l.created_at)::DATE                  AS period,
           l.channel,
           count(*)                                                 AS new_contacts,
           count(*) FILTER (WHERE l.is_qualified)                   AS qualified_leads,
           count(*) FILTER (WHERE l.is_qualified AND l.customer_at IS NOT NULL) AS closed_leads,
           count(o.lead_id) FILTER (WHERE l.is_qualified)           AS leads_with_opportunity
    FROM leads AS l
    LEFT JOIN has_opportunity AS o ON o.lead_id = l.lead_id
    WHERE l.created_at IS NOT NULL
    GROUP BY ALL
),
mql AS (
    SELECT date_trunc('month', mql_at)::DATE AS period, channel, count(*) AS mql_count
    FROM leads WHERE mql_at IS NOT NULL GROUP BY ALL
),
sql_stage AS (
    SELECT date_trunc('month', sql_at)::DATE AS period, channel, count(*) AS sql_count
    FROM leads WHERE sql_at IS NOT NULL GROUP BY ALL
),
converted AS (                    -- leads by the month they became customers
    SELECT date_trunc('month', customer_at)::DATE AS period, channel,
           avg(date_diff('day', created_at::DATE, customer_at::DATE)) AS time_to_conversion_days
    FROM leads WHERE customer_at IS NOT NULL GROUP BY ALL
),
spend AS (
    SELECT date_trunc('month', spend_date)::DATE AS period, channel, sum(spend) AS ad_spend
    FROM ad_spend WHERE spend_date IS NOT NULL GROUP BY ALL
),
won AS (
    SELECT date_trunc('month', acquired_at)::DATE AS period, channel, count(*) AS customers_won
    FROM customers WHERE acquired_at IS NOT NULL GROUP BY ALL
),
traffic AS (
    SELECT date_trunc('month', started_at)::DATE AS period, channel, count(*) AS sessions
    FROM web_sessions WHERE started_at IS NOT NULL GROUP BY ALL
),
sales AS (                        -- an order takes the channel of its customer
    SELECT date_trunc('month', o.ordered_at)::DATE AS period, c.channel,
           sum(o.amount) FILTER (WHERE o.status = 'paid') AS revenue
    FROM orders AS o
    LEFT JOIN customers AS c ON c.customer_id = o.customer_id
    WHERE o.ordered_at IS NOT NULL
    GROUP BY ALL
),
monthly AS (
    SELECT period, channel,
           coalesce(sum(new_contacts), 0)           AS new_contacts,
           coalesce(sum(qualified_leads), 0)        AS qualified_leads,
           coalesce(sum(closed_leads), 0)           AS closed_leads,
           coalesce(sum(leads_with_opportunity), 0) AS leads_with_opportunity,
           coalesce(sum(mql_count), 0)              AS mql_count,
           coalesce(sum(sql_count), 0)              AS sql_count,
           max(time_to_conversion_days)             AS time_to_conversion_days,  -- one row per key at most
           coalesce(sum(ad_spend), 0)               AS ad_spend,
           coalesce(sum(customers_won), 0)          AS customers_won,
           coalesce(sum(sessions), 0)               AS sessions,
           coalesce(sum(revenue), 0)                AS revenue
    FROM (
        SELECT * FROM created
        UNION ALL BY NAME SELECT * FROM mql
        UNION ALL BY NAME SELECT * FROM sql_stage
        UNION ALL BY NAME SELECT * FROM converted
        UNION ALL BY NAME SELECT * FROM spend
        UNION ALL BY NAME SELECT * FROM won
        UNION ALL BY NAME SELECT * FROM traffic
        UNION ALL BY NAME SELECT * FROM sales
    )
    GROUP BY period, channel
)
SELECT
    period,
    channel,
    new_contacts,
    qualified_leads,
    mql_count,
    sql_count,
    ad_spend / nullif(qualified_leads, 0)                          AS cost_per_lead,
    100 * closed_leads / nullif(qualified_leads, 0)                AS close_rate,
    100 * customers_won / nullif(qualified_leads, 0)               AS lead_to_customer_rate,
    100 * leads_with_opportunity / nullif(qualified_leads, 0)      AS lead_to_opportunity_rate,
    time_to_conversion_days,
    100 * qualified_leads / nullif(sessions, 0)                    AS traffic_to_lead_rate,
    qualified_leads / nullif(customers_won, 0)                     AS leads_per_customer,
    ad_spend / nullif(customers_won, 0)                            AS customer_acquisition_cost,
    -- cost per lead x leads per customer: null when either is (no leads, or no customers)
    (ad_spend / nullif(qualified_leads, 0)) * (qualified_leads / nullif(customers_won, 0)) AS cost_per_sale,
    revenue / nullif(qualified_leads, 0)                           AS lead_value
FROM monthly
ORDER BY period, channel
