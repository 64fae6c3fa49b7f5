-- Revenue KPIs by month and channel: revenue, revenue_growth_rate, customer_lifetime_value,
-- ltv_to_cac, mrr, arr, roi, customer_retention_rate, repeat_customer_revenue.
--
-- Orders take the channel of their customer. MRR and active subscriptions are read on the last
-- snapshot day of each month (the latest snapshot_date of the month over the whole table, so a
-- channel with no subscription left that day has 0). Growth and retention compare with the
-- previous calendar month of the same channel, which counts as 0 when it has no row. LTV
-- accumulates revenue and customers won from the start of the data.
--
-- Rows: every (month, channel) with orders, customers won, spend or subscription snapshots.
WITH
repeat_customers AS (             -- customers with more than one paid order, ever
    SELECT customer_id
    FROM orders
    WHERE status = 'paid'
    GROUP BY customer_id
    HAVING count(*) > 1
),
sales AS (
    SELECT date_trunc('month', o.ordered_at)::DATE AS period,
           c.channel,
           sum(o.amount) FILTER (WHERE o.status = 'paid')                               AS revenue,
           sum(o.amount) FILTER (WHERE o.status = 'paid' AND r.customer_id IS NOT NULL) AS repeat_customer_revenue
    FROM orders AS o
    LEFT JOIN customers AS c ON c.customer_id = o.customer_id
    LEFT JOIN repeat_customers AS r ON r.customer_id = o.customer_id
    WHERE o.ordered_at IS NOT NULL
    GROUP BY ALL
),
won AS (
    SELECT date_trunc('month', acquired_at)::DATE AS period, channel, count(*) AS customers_won
    FROM customers WHERE acquired_at IS NOT NULL GROUP BY ALL
),
spend AS (
    SELECT date_trunc('month', spend_date)::DATE AS period, channel, sum(spend) AS ad_spend
    FROM ad_spend WHERE spend_date IS NOT NULL GROUP BY ALL
),
month_end AS (                    -- the last snapshot day of every month
    SELECT max(snapshot_date) AS snapshot_date
    FROM subscriptions
    GROUP BY date_trunc('month', snapshot_date)
),
subscribed AS (
    SELECT date_trunc('month', snapshot_date)::DATE AS period,
           channel,
           sum(mrr) FILTER (WHERE is_month_end) AS mrr,
           count(*) FILTER (WHERE is_month_end) AS active_subscriptions
    FROM (SELECT snapshot_date, channel, mrr,
                 snapshot_date IN (SELECT snapshot_date FROM month_end) AS is_month_end
          FROM subscriptions
          WHERE snapshot_date IS NOT NULL)
    GROUP BY ALL
),
monthly AS (
    SELECT period, channel,
           coalesce(sum(revenue), 0)                 AS revenue,
           coalesce(sum(repeat_customer_revenue), 0) AS repeat_customer_revenue,
           coalesce(sum(customers_won), 0)           AS customers_won,
           coalesce(sum(ad_spend), 0)                AS ad_spend,
           coalesce(sum(mrr), 0)                     AS mrr,
           coalesce(sum(active_subscriptions), 0)    AS active_subscriptions
    FROM (
        SELECT * FROM sales
        UNION ALL BY NAME SELECT * FROM won
        UNION ALL BY NAME SELECT * FROM spend
        UNION ALL BY NAME SELECT * FROM subscribed
    )
    GROUP BY period, channel
),
with_history AS (
    SELECT *,
           -- the previous row of the channel counts only if it is the previous calendar month
           CASE WHEN lag(period) OVER by_month = period - INTERVAL 1 MONTH
                THEN lag(revenue) OVER by_month ELSE 0 END              AS previous_revenue,
           CASE WHEN lag(period) OVER by_month = period - INTERVAL 1 MONTH
                THEN lag(active_subscriptions) OVER by_month ELSE 0 END AS previous_active_subscriptions,
           sum(revenue) OVER by_month                                   AS revenue_to_date,
           sum(customers_won) OVER by_month                             AS customers_to_date
    FROM monthly
    WINDOW by_month AS (PARTITION BY channel ORDER BY period)
)
SELECT
    period,
    channel,
    revenue,
    100 * (revenue - previous_revenue) / nullif(previous_revenue, 0)            AS revenue_growth_rate,
    revenue_to_date / nullif(customers_to_date, 0)                              AS customer_lifetime_value,
    (revenue_to_date / nullif(customers_to_date, 0))
        / nullif(ad_spend / nullif(customers_won, 0), 0)                        AS ltv_to_cac,
    mrr,
    12 * mrr                                                                    AS arr,
    100 * (revenue - ad_spend) / nullif(ad_spend, 0)                            AS roi,
    100 * (active_subscriptions - customers_won) / nullif(previous_active_subscriptions, 0)
                                                                                AS customer_retention_rate,
    repeat_customer_revenue
FROM with_history
ORDER BY period, channel
