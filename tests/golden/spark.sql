-- cost_per_lead_by_channel_month
WITH `ad_spend_agg_days` AS (
  SELECT
    CAST(`ad_spend`.`spend_date` AS DATE) AS `period`,
    `ad_spend`.`channel` AS `channel`,
    SUM(`ad_spend`.`spend`) AS `sum_spend`
  FROM `ad_spend` AS `ad_spend`
  WHERE
    `ad_spend`.`spend_date` IS NOT NULL
    AND `ad_spend`.`spend_date` >= CAST('2025-01-01 00:00:00' AS TIMESTAMP)
    AND `ad_spend`.`spend_date` < CAST('2025-07-01 00:00:00' AS TIMESTAMP)
  GROUP BY
    CAST(`ad_spend`.`spend_date` AS DATE),
    `ad_spend`.`channel`
), `ad_spend_agg` AS (
  SELECT
    CAST(TRUNC(`ad_spend_agg_days`.`period`, 'MONTH') AS DATE) AS `period`,
    `ad_spend_agg_days`.`channel` AS `channel`,
    SUM(`ad_spend_agg_days`.`sum_spend`) AS `sum_spend`
  FROM `ad_spend_agg_days`
  GROUP BY
    CAST(TRUNC(`ad_spend_agg_days`.`period`, 'MONTH') AS DATE),
    `ad_spend_agg_days`.`channel`
), `leads_agg_days` AS (
  SELECT
    CAST(`leads`.`created_at` AS DATE) AS `period`,
    `leads`.`channel` AS `channel`,
    COUNT(*) AS `count`
  FROM (
    SELECT
      *
    FROM `leads` AS `leads`
    WHERE
      `leads`.`is_qualified`
  ) AS `leads`
  WHERE
    `leads`.`created_at` IS NOT NULL
    AND `leads`.`created_at` >= CAST('2025-01-01 00:00:00' AS TIMESTAMP)
    AND `leads`.`created_at` < CAST('2025-07-01 00:00:00' AS TIMESTAMP)
  GROUP BY
    CAST(`leads`.`created_at` AS DATE),
    `leads`.`channel`
), `leads_agg` AS (
  SELECT
    CAST(TRUNC(`leads_agg_days`.`period`, 'MONTH') AS DATE) AS `period`,
    `leads_agg_days`.`channel` AS `channel`,
    SUM(`leads_agg_days`.`count`) AS `count`
  FROM `leads_agg_days`
  GROUP BY
    CAST(TRUNC(`leads_agg_days`.`period`, 'MONTH') AS DATE),
    `leads_agg_days`.`channel`
), `keys` AS (
  SELECT
    `ad_spend_agg`.`period`,
    `ad_spend_agg`.`channel`
  FROM `ad_spend_agg`
  UNION
  SELECT
    `leads_agg`.`period`,
    `leads_agg`.`channel`
  FROM `leads_agg`
)
SELECT
  `keys`.`period` AS `period`,
  `keys`.`channel` AS `channel`,
  CAST(CAST(COALESCE(`ad_spend_agg`.`sum_spend`, 0) AS DOUBLE) / NULLIF(COALESCE(`leads_agg`.`count`, 0), 0) AS DOUBLE) AS `cost_per_lead`
FROM `keys`
LEFT JOIN `ad_spend_agg`
  ON `keys`.`period` IS NOT DISTINCT FROM `ad_spend_agg`.`period`
  AND `keys`.`channel` IS NOT DISTINCT FROM `ad_spend_agg`.`channel`
LEFT JOIN `leads_agg`
  ON `keys`.`period` IS NOT DISTINCT FROM `leads_agg`.`period`
  AND `keys`.`channel` IS NOT DISTINCT FROM `leads_agg`.`channel`
ORDER BY
  `period` ASC NULLS LAST,
  `channel` ASC NULLS LAST;

-- nps_by_quarter
WITH `nps_responses_agg_days` AS (
  SELECT
    CAST(`nps_responses`.`responded_at` AS DATE) AS `period`,
    COUNT(*) FILTER(WHERE
      `nps_responses`.`score` >= 9) AS `count_where_score`,
    COUNT(*) FILTER(WHERE
      `nps_responses`.`score` <= 6) AS `count_where_score_2`,
    COUNT(*) AS `count`
  FROM `nps_responses` AS `nps_responses`
  WHERE
    `nps_responses`.`responded_at` IS NOT NULL
  GROUP BY
    CAST(`nps_responses`.`responded_at` AS DATE)
), `nps_responses_agg` AS (
  SELECT
    CAST(TRUNC(`nps_responses_agg_days`.`period`, 'QUARTER') AS DATE) AS `period`,
    SUM(`nps_responses_agg_days`.`count_where_score`) AS `count_where_score`,
    SUM(`nps_responses_agg_days`.`count_where_score_2`) AS `count_where_score_2`,
    SUM(`nps_responses_agg_days`.`count`) AS `count`
  FROM `nps_responses_agg_days`
  GROUP BY
    CAST(TRUNC(`nps_responses_agg_days`.`period`, 'QUARTER') AS DATE)
)
SELECT
  `nps_responses_agg`.`period` AS `period`,
  CAST(CAST((
    100 * (
      `nps_responses_agg`.`count_where_score` - `nps_responses_agg`.`count_where_score_2`
    )
  ) AS DOUBLE) / `nps_responses_agg`.`count` AS DOUBLE) AS `nps`
FROM `nps_responses_agg`
ORDER BY
  `period` ASC NULLS LAST;

-- mrr_by_month
WITH `subscriptions_agg_last` AS (
  SELECT
    CAST(DATE_TRUNC('MONTH', CAST(`subscriptions`.`snapshot_date` AS TIMESTAMP)) AS DATE) AS `period`,
    MAX(`subscriptions`.`snapshot_date`) AS `snapshot_time`
  FROM `subscriptions` AS `subscriptions`
  WHERE
    `subscriptions`.`snapshot_date` IS NOT NULL
  GROUP BY
    CAST(DATE_TRUNC('MONTH', CAST(`subscriptions`.`snapshot_date` AS TIMESTAMP)) AS DATE)
), `subscriptions_agg` AS (
  SELECT
    CAST(DATE_TRUNC('MONTH', CAST(`subscriptions`.`snapshot_date` AS TIMESTAMP)) AS DATE) AS `period`,
    SUM(`subscriptions`.`mrr`) FILTER(WHERE
      `subscriptions_agg_last`.`snapshot_time` IS NOT NULL) AS `last_mrr`
  FROM `subscriptions` AS `subscriptions`
  LEFT JOIN `subscriptions_agg_last`
    ON `subscriptions`.`snapshot_date` = `subscriptions_agg_last`.`snapshot_time`
  WHERE
    `subscriptions`.`snapshot_date` IS NOT NULL
  GROUP BY
    CAST(DATE_TRUNC('MONTH', CAST(`subscriptions`.`snapshot_date` AS TIMESTAMP)) AS DATE)
)
SELECT
  `subscriptions_agg`.`period` AS `period`,
  CAST(COALESCE(`subscriptions_agg`.`last_mrr`, 0) AS DOUBLE) AS `mrr`
FROM `subscriptions_agg`
ORDER BY
  `period` ASC NULLS LAST;

-- revenue_growth_by_channel_month
WITH `orders_agg_days` AS (
  SELECT
    CAST(`orders`.`ordered_at` AS DATE) AS `period`,
    `orders__customers`.`channel` AS `channel`,
    SUM(`orders`.`amount`) FILTER(WHERE
      `orders`.`status` = 'paid') AS `sum_amount_where_status`
  FROM `orders` AS `orders`
  LEFT JOIN `customers` AS `orders__customers`
    ON `orders`.`customer_id` = `orders__customers`.`customer_id`
  WHERE
    `orders`.`ordered_at` IS NOT NULL
    AND `orders`.`ordered_at` >= CAST('2024-12-01 00:00:00' AS TIMESTAMP)
  GROUP BY
    CAST(`orders`.`ordered_at` AS DATE),
    `orders__customers`.`channel`
), `orders_agg` AS (
  SELECT
    CAST(TRUNC(`orders_agg_days`.`period`, 'MONTH') AS DATE) AS `period`,
    `orders_agg_days`.`channel` AS `channel`,
    SUM(`orders_agg_days`.`sum_amount_where_status`) AS `sum_amount_where_status`
  FROM `orders_agg_days`
  GROUP BY
    CAST(TRUNC(`orders_agg_days`.`period`, 'MONTH') AS DATE),
    `orders_agg_days`.`channel`
), `series` AS (
  SELECT
    `orders_agg`.`period`,
    `orders_agg`.`channel`,
    YEAR(`orders_agg`.`period`) * 12 + MONTH(`orders_agg`.`period`) AS `period_index`,
    COALESCE(`orders_agg`.`sum_amount_where_status`, 0) AS `orders__sum_amount_where_status`
  FROM `orders_agg`
), `windowed` AS (
  SELECT
    `series`.*,
    COALESCE(
      MAX(`series`.`orders__sum_amount_where_status`) OVER (
        PARTITION BY `series`.`channel`
        ORDER BY `series`.`period_index`
        RANGE BETWEEN 1 PRECEDING AND 1 PRECEDING
      ),
      0
    ) AS `previous_orders__sum_amount_where_status_1`
  FROM `series`
)
SELECT
  `windowed`.`period` AS `period`,
  `windowed`.`channel` AS `channel`,
  CAST(CAST((
    100 * (
      `windowed`.`orders__sum_amount_where_status` - `windowed`.`previous_orders__sum_amount_where_status_1`
    )
  ) AS DOUBLE) / NULLIF(`windowed`.`previous_orders__sum_amount_where_status_1`, 0) AS DOUBLE) AS `revenue_growth_rate`
FROM `windowed`
WHERE
  `windowed`.`period` >= CAST('2025-01-01' AS DATE)
ORDER BY
  `period` ASC NULLS LAST,
  `channel` ASC NULLS LAST;

-- ltv_to_cac_by_channel_quarter
WITH `orders_agg_days` AS (
  SELECT
    CAST(`orders`.`ordered_at` AS DATE) AS `period`,
    `orders__customers`.`channel` AS `channel`,
    SUM(`orders`.`amount`) FILTER(WHERE
      `orders`.`status` = 'paid') AS `sum_amount_where_status`
  FROM `orders` AS `orders`
  LEFT JOIN `customers` AS `orders__customers`
    ON `orders`.`customer_id` = `orders__customers`.`customer_id`
  WHERE
    `orders`.`ordered_at` IS NOT NULL
  GROUP BY
    CAST(`orders`.`ordered_at` AS DATE),
    `orders__customers`.`channel`
), `orders_agg` AS (
  SELECT
    CAST(TRUNC(`orders_agg_days`.`period`, 'QUARTER') AS DATE) AS `period`,
    `orders_agg_days`.`channel` AS `channel`,
    SUM(`orders_agg_days`.`sum_amount_where_status`) AS `sum_amount_where_status`
  FROM `orders_agg_days`
  GROUP BY
    CAST(TRUNC(`orders_agg_days`.`period`, 'QUARTER') AS DATE),
    `orders_agg_days`.`channel`
), `customers_agg_days` AS (
  SELECT
    CAST(`customers`.`acquired_at` AS DATE) AS `period`,
    `customers`.`channel` AS `channel`,
    COUNT(*) AS `count`
  FROM `customers` AS `customers`
  WHERE
    `customers`.`acquired_at` IS NOT NULL
  GROUP BY
    CAST(`customers`.`acquired_at` AS DATE),
    `customers`.`channel`
), `customers_agg` AS (
  SELECT
    CAST(TRUNC(`customers_agg_days`.`period`, 'QUARTER') AS DATE) AS `period`,
    `customers_agg_days`.`channel` AS `channel`,
    SUM(`customers_agg_days`.`count`) AS `count`
  FROM `customers_agg_days`
  GROUP BY
    CAST(TRUNC(`customers_agg_days`.`period`, 'QUARTER') AS DATE),
    `customers_agg_days`.`channel`
), `ad_spend_agg_days` AS (
  SELECT
    CAST(`ad_spend`.`spend_date` AS DATE) AS `period`,
    `ad_spend`.`channel` AS `channel`,
    SUM(`ad_spend`.`spend`) AS `sum_spend`
  FROM `ad_spend` AS `ad_spend`
  WHERE
    `ad_spend`.`spend_date` IS NOT NULL
  GROUP BY
    CAST(`ad_spend`.`spend_date` AS DATE),
    `ad_spend`.`channel`
), `ad_spend_agg` AS (
  SELECT
    CAST(TRUNC(`ad_spend_agg_days`.`period`, 'QUARTER') AS DATE) AS `period`,
    `ad_spend_agg_days`.`channel` AS `channel`,
    SUM(`ad_spend_agg_days`.`sum_spend`) AS `sum_spend`
  FROM `ad_spend_agg_days`
  GROUP BY
    CAST(TRUNC(`ad_spend_agg_days`.`period`, 'QUARTER') AS DATE),
    `ad_spend_agg_days`.`channel`
), `keys` AS (
  SELECT
    `orders_agg`.`period`,
    `orders_agg`.`channel`
  FROM `orders_agg`
  UNION
  SELECT
    `customers_agg`.`period`,
    `customers_agg`.`channel`
  FROM `customers_agg`
  UNION
  SELECT
    `ad_spend_agg`.`period`,
    `ad_spend_agg`.`channel`
  FROM `ad_spend_agg`
), `series` AS (
  SELECT
    `keys`.`period`,
    `keys`.`channel`,
    YEAR(`keys`.`period`) * 12 + MONTH(`keys`.`period`) AS `period_index`,
    COALESCE(`orders_agg`.`sum_amount_where_status`, 0) AS `orders__sum_amount_where_status`,
    COALESCE(`customers_agg`.`count`, 0) AS `customers__count`,
    COALESCE(`ad_spend_agg`.`sum_spend`, 0) AS `ad_spend__sum_spend`
  FROM `keys`
  LEFT JOIN `orders_agg`
    ON `keys`.`period` IS NOT DISTINCT FROM `orders_agg`.`period`
    AND `keys`.`channel` IS NOT DISTINCT FROM `orders_agg`.`channel`
  LEFT JOIN `customers_agg`
    ON `keys`.`period` IS NOT DISTINCT FROM `customers_agg`.`period`
    AND `keys`.`channel` IS NOT DISTINCT FROM `customers_agg`.`channel`
  LEFT JOIN `ad_spend_agg`
    ON `keys`.`period` IS NOT DISTINCT FROM `ad_spend_agg`.`period`
    AND `keys`.`channel` IS NOT DISTINCT FROM `ad_spend_agg`.`channel`
), `windowed` AS (
  SELECT
    `series`.*,
    SUM(`series`.`orders__sum_amount_where_status`) OVER (
      PARTITION BY `series`.`channel`
      ORDER BY `series`.`period`
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS `cumulative_orders__sum_amount_where_status_1`,
    SUM(`series`.`customers__count`) OVER (
      PARTITION BY `series`.`channel`
      ORDER BY `series`.`period`
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS `cumulative_customers__count_2`
  FROM `series`
)
SELECT
  `windowed`.`period` AS `period`,
  `windowed`.`channel` AS `channel`,
  CAST(CAST((
    CAST(`windowed`.`cumulative_orders__sum_amount_where_status_1` AS DOUBLE) / NULLIF(`windowed`.`cumulative_customers__count_2`, 0)
  ) AS DOUBLE) / NULLIF(
    (
      CAST(`windowed`.`ad_spend__sum_spend` AS DOUBLE) / NULLIF(`windowed`.`customers__count`, 0)
    ),
    0
  ) AS DOUBLE) AS `ltv_to_cac`
FROM `windowed`
ORDER BY
  `period` ASC NULLS LAST,
  `channel` ASC NULLS LAST;

-- lead_to_opportunity_by_week
WITH `leads_agg_days` AS (
  SELECT
    CAST(`leads`.`created_at` AS DATE) AS `period`,
    COUNT(*) FILTER(WHERE
      `opportunities_with_lead_id_1`.`lead_id` IS NOT NULL) AS `count_where_filter`,
    COUNT(*) AS `count`
  FROM (
    SELECT
      *
    FROM `leads` AS `leads`
    WHERE
      `leads`.`is_qualified`
  ) AS `leads`
  LEFT JOIN (
    SELECT
      `opportunities`.`lead_id` AS `lead_id`
    FROM `opportunities` AS `opportunities`
    GROUP BY
      `opportunities`.`lead_id`
  ) AS `opportunities_with_lead_id_1`
    ON `leads`.`lead_id` = `opportunities_with_lead_id_1`.`lead_id`
  WHERE
    `leads`.`created_at` IS NOT NULL AND (
      `leads`.`channel` <> 'email'
    )
  GROUP BY
    CAST(`leads`.`created_at` AS DATE)
), `leads_agg` AS (
  SELECT
    CAST(TRUNC(`leads_agg_days`.`period`, 'WEEK') AS DATE) AS `period`,
    SUM(`leads_agg_days`.`count_where_filter`) AS `count_where_filter`,
    SUM(`leads_agg_days`.`count`) AS `count`
  FROM `leads_agg_days`
  GROUP BY
    CAST(TRUNC(`leads_agg_days`.`period`, 'WEEK') AS DATE)
)
SELECT
  `leads_agg`.`period` AS `period`,
  CAST(CAST((
    100 * `leads_agg`.`count_where_filter`
  ) AS DOUBLE) / `leads_agg`.`count` AS DOUBLE) AS `lead_to_opportunity_rate`
FROM `leads_agg`
ORDER BY
  `period` ASC NULLS LAST;

-- repeat_revenue_by_channel
WITH `orders_agg` AS (
  SELECT
    `orders__customers`.`channel` AS `channel`,
    SUM(`orders`.`amount`) FILTER(WHERE
      (
        `orders`.`status` = 'paid'
      )
      AND (
        COALESCE(`orders_per_customer_id_1`.`value`, 0) > 1
      )) AS `sum_amount_where_status`
  FROM `orders` AS `orders`
  LEFT JOIN `customers` AS `orders__customers`
    ON `orders`.`customer_id` = `orders__customers`.`customer_id`
  LEFT JOIN (
    SELECT
      `orders`.`customer_id` AS `customer_id`,
      COUNT(*) AS `value`
    FROM `orders` AS `orders`
    WHERE
      (
        `orders`.`status` = 'paid'
      )
    GROUP BY
      `orders`.`customer_id`
  ) AS `orders_per_customer_id_1`
    ON `orders`.`customer_id` = `orders_per_customer_id_1`.`customer_id`
  WHERE
    `orders`.`ordered_at` IS NOT NULL
  GROUP BY
    `orders__customers`.`channel`
)
SELECT
  `orders_agg`.`channel` AS `channel`,
  CAST(COALESCE(`orders_agg`.`sum_amount_where_status`, 0) AS DOUBLE) AS `repeat_customer_revenue`
FROM `orders_agg`
WHERE
  COALESCE(`orders_agg`.`sum_amount_where_status`, 0) > 0
ORDER BY
  `channel` ASC NULLS LAST;

-- lead_share_filled
WITH `contacts_agg_days` AS (
  SELECT
    CAST(`contacts`.`created_at` AS DATE) AS `period`,
    `contacts`.`channel` AS `channel`,
    COUNT(*) AS `count`
  FROM `leads` AS `contacts`
  WHERE
    `contacts`.`created_at` IS NOT NULL
    AND `contacts`.`created_at` >= CAST('2025-01-01 00:00:00' AS TIMESTAMP)
    AND `contacts`.`created_at` < CAST('2025-04-01 00:00:00' AS TIMESTAMP)
  GROUP BY
    CAST(`contacts`.`created_at` AS DATE),
    `contacts`.`channel`
), `contacts_agg` AS (
  SELECT
    CAST(TRUNC(`contacts_agg_days`.`period`, 'MONTH') AS DATE) AS `period`,
    `contacts_agg_days`.`channel` AS `channel`,
    SUM(`contacts_agg_days`.`count`) AS `count`
  FROM `contacts_agg_days`
  GROUP BY
    CAST(TRUNC(`contacts_agg_days`.`period`, 'MONTH') AS DATE),
    `contacts_agg_days`.`channel`
), `keys` AS (
  SELECT
    `contacts_agg`.`period`,
    `contacts_agg`.`channel`
  FROM `contacts_agg`
  UNION
  SELECT
    `spine`.`period`,
    `observed`.`channel`
  FROM VALUES
    (CAST('2025-01-01' AS DATE)),
    (CAST('2025-02-01' AS DATE)),
    (CAST('2025-03-01' AS DATE)) AS `spine`(`period`)
  CROSS JOIN (
    SELECT DISTINCT
      `channel`
    FROM (
      SELECT
        `contacts_agg`.`period`,
        `contacts_agg`.`channel`
      FROM `contacts_agg`
    ) AS `observed_keys`
  ) AS `observed`
), `series` AS (
  SELECT
    `keys`.`period`,
    `keys`.`channel`,
    YEAR(`keys`.`period`) * 12 + MONTH(`keys`.`period`) AS `period_index`,
    COALESCE(`contacts_agg`.`count`, 0) AS `contacts__count`
  FROM `keys`
  LEFT JOIN `contacts_agg`
    ON `keys`.`period` IS NOT DISTINCT FROM `contacts_agg`.`period`
    AND `keys`.`channel` IS NOT DISTINCT FROM `contacts_agg`.`channel`
), `windowed` AS (
  SELECT
    `series`.*,
    SUM(`series`.`contacts__count`) OVER (PARTITION BY `series`.`period`) AS `total_contacts__count_1`
  FROM `series`
)
SELECT
  `windowed`.`period` AS `period`,
  `windowed`.`channel` AS `channel`,
  CAST(100 * (
    CAST(`windowed`.`contacts__count` AS DOUBLE) / NULLIF(`windowed`.`total_contacts__count_1`, 0)
  ) AS DOUBLE) AS `lead_share`
FROM `windowed`
WHERE
  `windowed`.`period` >= CAST('2025-01-01' AS DATE)
ORDER BY
  `period` ASC NULLS LAST,
  `channel` ASC NULLS LAST;
