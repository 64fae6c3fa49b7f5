-- cost_per_lead_by_channel_month
SELECT
  CAST(DATE_TRUNC('MONTH', "stacked"."period") AS DATE) AS "period",
  "stacked"."channel" AS "channel",
  CAST(COALESCE(SUM("stacked"."ad_spend_agg__sum_spend"), 0) / NULLIF(COALESCE(SUM("stacked"."leads_agg__count"), 0), 0) AS DOUBLE) AS "cost_per_lead"
FROM (
  SELECT
    "ad_spend_agg_days"."period" AS "period",
    "ad_spend_agg_days"."channel" AS "channel",
    "ad_spend_agg_days"."sum_spend" AS "ad_spend_agg__sum_spend",
    NULL AS "leads_agg__count"
  FROM (
    SELECT
      CAST("ad_spend"."spend_date" AS DATE) AS "period",
      "ad_spend"."channel" AS "channel",
      SUM("ad_spend"."spend") AS "sum_spend"
    FROM "ad_spend" AS "ad_spend"
    WHERE
      "ad_spend"."spend_date" IS NOT NULL
      AND "ad_spend"."spend_date" >= CAST('2025-01-01 00:00:00' AS TIMESTAMP)
      AND "ad_spend"."spend_date" < CAST('2025-07-01 00:00:00' AS TIMESTAMP)
    GROUP BY
      CAST("ad_spend"."spend_date" AS DATE),
      "ad_spend"."channel"
  ) AS "ad_spend_agg_days"
  UNION ALL
  SELECT
    "leads_agg_days"."period" AS "period",
    "leads_agg_days"."channel" AS "channel",
    NULL AS "ad_spend_agg__sum_spend",
    "leads_agg_days"."count" AS "leads_agg__count"
  FROM (
    SELECT
      CAST("leads"."created_at" AS DATE) AS "period",
      "leads"."channel" AS "channel",
      COUNT(*) AS "count"
    FROM (
      SELECT
        *
      FROM "leads" AS "leads"
      WHERE
        "leads"."is_qualified"
    ) AS "leads"
    WHERE
      "leads"."created_at" IS NOT NULL
      AND "leads"."created_at" >= CAST('2025-01-01 00:00:00' AS TIMESTAMP)
      AND "leads"."created_at" < CAST('2025-07-01 00:00:00' AS TIMESTAMP)
    GROUP BY
      CAST("leads"."created_at" AS DATE),
      "leads"."channel"
  ) AS "leads_agg_days"
) AS "stacked"
GROUP BY
  CAST(DATE_TRUNC('MONTH', "stacked"."period") AS DATE),
  "stacked"."channel"
ORDER BY
  "period" ASC,
  "channel" ASC;

-- nps_by_quarter
SELECT
  CAST(DATE_TRUNC('QUARTER', "nps_responses_agg_days"."period") AS DATE) AS "period",
  CAST((
    100 * (
      SUM("nps_responses_agg_days"."count_where_score") - SUM("nps_responses_agg_days"."count_where_score_2")
    )
  ) / SUM("nps_responses_agg_days"."count") AS DOUBLE) AS "nps"
FROM (
  SELECT
    CAST("nps_responses"."responded_at" AS DATE) AS "period",
    COUNT(*) FILTER(WHERE
      "nps_responses"."score" >= 9) AS "count_where_score",
    COUNT(*) FILTER(WHERE
      "nps_responses"."score" <= 6) AS "count_where_score_2",
    COUNT(*) AS "count"
  FROM "nps_responses" AS "nps_responses"
  WHERE
    "nps_responses"."responded_at" IS NOT NULL
  GROUP BY
    CAST("nps_responses"."responded_at" AS DATE)
) AS "nps_responses_agg_days"
GROUP BY
  CAST(DATE_TRUNC('QUARTER', "nps_responses_agg_days"."period") AS DATE)
ORDER BY
  "period" ASC;

-- mrr_by_month
SELECT
  CAST(DATE_TRUNC('MONTH', CAST("subscriptions"."snapshot_date" AS TIMESTAMP)) AS DATE) AS "period",
  CAST(COALESCE(
    SUM("subscriptions"."mrr") FILTER(WHERE
      "subscriptions_agg_last"."snapshot_time" IS NOT NULL),
    0
  ) AS DOUBLE) AS "mrr"
FROM "subscriptions" AS "subscriptions"
LEFT JOIN (
  SELECT
    CAST(DATE_TRUNC('MONTH', CAST("subscriptions"."snapshot_date" AS TIMESTAMP)) AS DATE) AS "period",
    MAX("subscriptions"."snapshot_date") AS "snapshot_time"
  FROM "subscriptions" AS "subscriptions"
  WHERE
    "subscriptions"."snapshot_date" IS NOT NULL
  GROUP BY
    CAST(DATE_TRUNC('MONTH', CAST("subscriptions"."snapshot_date" AS TIMESTAMP)) AS DATE)
) AS "subscriptions_agg_last"
  ON "subscriptions"."snapshot_date" = "subscriptions_agg_last"."snapshot_time"
WHERE
  "subscriptions"."snapshot_date" IS NOT NULL
GROUP BY
  CAST(DATE_TRUNC('MONTH', CAST("subscriptions"."snapshot_date" AS TIMESTAMP)) AS DATE)
ORDER BY
  "period" ASC;

-- revenue_growth_by_channel_month
SELECT
  "windowed"."period" AS "period",
  "windowed"."channel" AS "channel",
  CAST((
    100 * (
      "windowed"."orders__sum_amount_where_status" - "windowed"."previous_orders__sum_amount_where_status_1"
    )
  ) / NULLIF("windowed"."previous_orders__sum_amount_where_status_1", 0) AS DOUBLE) AS "revenue_growth_rate"
FROM (
  SELECT
    "series".*,
    COALESCE(
      MAX("series"."orders__sum_amount_where_status") OVER (
        PARTITION BY "series"."channel"
        ORDER BY "series"."period_index"
        RANGE BETWEEN 1 PRECEDING AND 1 PRECEDING
      ),
      0
    ) AS "previous_orders__sum_amount_where_status_1"
  FROM (
    SELECT
      "orders_agg"."period",
      "orders_agg"."channel",
      YEAR("orders_agg"."period") * 12 + MONTH("orders_agg"."period") AS "period_index",
      COALESCE("orders_agg"."sum_amount_where_status", 0) AS "orders__sum_amount_where_status"
    FROM (
      SELECT
        CAST(DATE_TRUNC('MONTH', "orders_agg_days"."period") AS DATE) AS "period",
        "orders_agg_days"."channel" AS "channel",
        SUM("orders_agg_days"."sum_amount_where_status") AS "sum_amount_where_status"
      FROM (
        SELECT
          CAST("orders"."ordered_at" AS DATE) AS "period",
          "orders__customers"."channel" AS "channel",
          SUM("orders"."amount") FILTER(WHERE
            "orders"."status" = 'paid') AS "sum_amount_where_status"
        FROM "orders" AS "orders"
        LEFT JOIN "customers" AS "orders__customers"
          ON "orders"."customer_id" = "orders__customers"."customer_id"
        WHERE
          "orders"."ordered_at" IS NOT NULL
          AND "orders"."ordered_at" >= CAST('2024-12-01 00:00:00' AS TIMESTAMP)
        GROUP BY
          CAST("orders"."ordered_at" AS DATE),
          "orders__customers"."channel"
      ) AS "orders_agg_days"
      GROUP BY
        CAST(DATE_TRUNC('MONTH', "orders_agg_days"."period") AS DATE),
        "orders_agg_days"."channel"
    ) AS "orders_agg"
  ) AS "series"
) AS "windowed"
WHERE
  "windowed"."period" >= CAST('2025-01-01' AS DATE)
ORDER BY
  "period" ASC,
  "channel" ASC;

-- ltv_to_cac_by_channel_quarter
SELECT
  "keys"."period" AS "period",
  "keys"."channel" AS "channel",
  CAST((
    SUM(COALESCE("keys"."orders_agg__sum_amount_where_status", 0)) OVER (
      PARTITION BY "keys"."channel"
      ORDER BY "keys"."period"
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) / NULLIF(
      SUM(COALESCE("keys"."customers_agg__count", 0)) OVER (
        PARTITION BY "keys"."channel"
        ORDER BY "keys"."period"
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
      ),
      0
    )
  ) / NULLIF(
    (
      COALESCE("keys"."ad_spend_agg__sum_spend", 0) / NULLIF(COALESCE("keys"."customers_agg__count", 0), 0)
    ),
    0
  ) AS DOUBLE) AS "ltv_to_cac"
FROM (
  SELECT
    CAST(DATE_TRUNC('QUARTER', "stacked"."period") AS DATE) AS "period",
    "stacked"."channel" AS "channel",
    SUM("stacked"."orders_agg__sum_amount_where_status") AS "orders_agg__sum_amount_where_status",
    SUM("stacked"."customers_agg__count") AS "customers_agg__count",
    SUM("stacked"."ad_spend_agg__sum_spend") AS "ad_spend_agg__sum_spend"
  FROM (
    SELECT
      "orders_agg_days"."period" AS "period",
      "orders_agg_days"."channel" AS "channel",
      "orders_agg_days"."sum_amount_where_status" AS "orders_agg__sum_amount_where_status",
      NULL AS "customers_agg__count",
      NULL AS "ad_spend_agg__sum_spend"
    FROM (
      SELECT
        CAST("orders"."ordered_at" AS DATE) AS "period",
        "orders__customers"."channel" AS "channel",
        SUM("orders"."amount") FILTER(WHERE
          "orders"."status" = 'paid') AS "sum_amount_where_status"
      FROM "orders" AS "orders"
      LEFT JOIN "customers" AS "orders__customers"
        ON "orders"."customer_id" = "orders__customers"."customer_id"
      WHERE
        "orders"."ordered_at" IS NOT NULL
      GROUP BY
        CAST("orders"."ordered_at" AS DATE),
        "orders__customers"."channel"
    ) AS "orders_agg_days"
    UNION ALL
    SELECT
      "customers_agg_days"."period" AS "period",
      "customers_agg_days"."channel" AS "channel",
      NULL AS "orders_agg__sum_amount_where_status",
      "customers_agg_days"."count" AS "customers_agg__count",
      NULL AS "ad_spend_agg__sum_spend"
    FROM (
      SELECT
        CAST("customers"."acquired_at" AS DATE) AS "period",
        "customers"."channel" AS "channel",
        COUNT(*) AS "count"
      FROM "customers" AS "customers"
      WHERE
        "customers"."acquired_at" IS NOT NULL
      GROUP BY
        CAST("customers"."acquired_at" AS DATE),
        "customers"."channel"
    ) AS "customers_agg_days"
    UNION ALL
    SELECT
      "ad_spend_agg_days"."period" AS "period",
      "ad_spend_agg_days"."channel" AS "channel",
      NULL AS "orders_agg__sum_amount_where_status",
      NULL AS "customers_agg__count",
      "ad_spend_agg_days"."sum_spend" AS "ad_spend_agg__sum_spend"
    FROM (
      SELECT
        CAST("ad_spend"."spend_date" AS DATE) AS "period",
        "ad_spend"."channel" AS "channel",
        SUM("ad_spend"."spend") AS "sum_spend"
      FROM "ad_spend" AS "ad_spend"
      WHERE
        "ad_spend"."spend_date" IS NOT NULL
      GROUP BY
        CAST("ad_spend"."spend_date" AS DATE),
        "ad_spend"."channel"
    ) AS "ad_spend_agg_days"
  ) AS "stacked"
  GROUP BY
    CAST(DATE_TRUNC('QUARTER', "stacked"."period") AS DATE),
    "stacked"."channel"
) AS "keys"
ORDER BY
  "period" ASC,
  "channel" ASC;

-- lead_to_opportunity_by_week
SELECT
  CAST(DATE_TRUNC('WEEK', "leads_agg_days"."period") AS DATE) AS "period",
  CAST((
    100 * SUM("leads_agg_days"."count_where_filter")
  ) / SUM("leads_agg_days"."count") AS DOUBLE) AS "lead_to_opportunity_rate"
FROM (
  SELECT
    CAST("leads"."created_at" AS DATE) AS "period",
    COUNT(*) FILTER(WHERE
      "opportunities_with_lead_id_1"."lead_id" IS NOT NULL) AS "count_where_filter",
    COUNT(*) AS "count"
  FROM (
    SELECT
      *
    FROM "leads" AS "leads"
    WHERE
      "leads"."is_qualified"
  ) AS "leads"
  LEFT JOIN (
    SELECT
      "opportunities"."lead_id" AS "lead_id"
    FROM "opportunities" AS "opportunities"
    GROUP BY
      "opportunities"."lead_id"
  ) AS "opportunities_with_lead_id_1"
    ON "leads"."lead_id" = "opportunities_with_lead_id_1"."lead_id"
  WHERE
    "leads"."created_at" IS NOT NULL AND (
      "leads"."channel" <> 'email'
    )
  GROUP BY
    CAST("leads"."created_at" AS DATE)
) AS "leads_agg_days"
GROUP BY
  CAST(DATE_TRUNC('WEEK', "leads_agg_days"."period") AS DATE)
ORDER BY
  "period" ASC;

-- repeat_revenue_by_channel
SELECT
  "orders_agg"."channel" AS "channel",
  CAST(COALESCE("orders_agg"."sum_amount_where_status", 0) AS DOUBLE) AS "repeat_customer_revenue"
FROM (
  SELECT
    "orders__customers"."channel" AS "channel",
    SUM("orders"."amount") FILTER(WHERE
      (
        "orders"."status" = 'paid'
      )
      AND (
        COALESCE("orders_per_customer_id_1"."value", 0) > 1
      )) AS "sum_amount_where_status"
  FROM "orders" AS "orders"
  LEFT JOIN "customers" AS "orders__customers"
    ON "orders"."customer_id" = "orders__customers"."customer_id"
  LEFT JOIN (
    SELECT
      "orders"."customer_id" AS "customer_id",
      COUNT(*) AS "value"
    FROM "orders" AS "orders"
    WHERE
      (
        "orders"."status" = 'paid'
      )
    GROUP BY
      "orders"."customer_id"
  ) AS "orders_per_customer_id_1"
    ON "orders"."customer_id" = "orders_per_customer_id_1"."customer_id"
  WHERE
    "orders"."ordered_at" IS NOT NULL
  GROUP BY
    "orders__customers"."channel"
) AS "orders_agg"
WHERE
  COALESCE("orders_agg"."sum_amount_where_status", 0) > 0
ORDER BY
  "channel" ASC;

-- lead_share_filled
WITH "contacts_agg" AS (
  SELECT
    CAST(DATE_TRUNC('MONTH', "contacts_agg_days"."period") AS DATE) AS "period",
    "contacts_agg_days"."channel" AS "channel",
    SUM("contacts_agg_days"."count") AS "count"
  FROM (
    SELECT
      CAST("contacts"."created_at" AS DATE) AS "period",
      "contacts"."channel" AS "channel",
      COUNT(*) AS "count"
    FROM "leads" AS "contacts"
    WHERE
      "contacts"."created_at" IS NOT NULL
      AND "contacts"."created_at" >= CAST('2025-01-01 00:00:00' AS TIMESTAMP)
      AND "contacts"."created_at" < CAST('2025-04-01 00:00:00' AS TIMESTAMP)
    GROUP BY
      CAST("contacts"."created_at" AS DATE),
      "contacts"."channel"
  ) AS "contacts_agg_days"
  GROUP BY
    CAST(DATE_TRUNC('MONTH', "contacts_agg_days"."period") AS DATE),
    "contacts_agg_days"."channel"
)
SELECT
  "windowed"."period" AS "period",
  "windowed"."channel" AS "channel",
  CAST(100 * (
    "windowed"."contacts__count" / NULLIF("windowed"."total_contacts__count_1", 0)
  ) AS DOUBLE) AS "lead_share"
FROM (
  SELECT
    "series".*,
    SUM("series"."contacts__count") OVER (PARTITION BY "series"."period") AS "total_contacts__count_1"
  FROM (
    SELECT
      "keys"."period",
      "keys"."channel",
      YEAR("keys"."period") * 12 + MONTH("keys"."period") AS "period_index",
      COALESCE("contacts_agg"."count", 0) AS "contacts__count"
    FROM (
      SELECT
        "contacts_agg"."period",
        "contacts_agg"."channel"
      FROM "contacts_agg"
      UNION
      SELECT
        "spine"."period",
        "observed"."channel"
      FROM (VALUES
        (CAST('2025-01-01' AS DATE)),
        (CAST('2025-02-01' AS DATE)),
        (CAST('2025-03-01' AS DATE))) AS "spine"("period")
      CROSS JOIN (
        SELECT DISTINCT
          "channel"
        FROM (
          SELECT
            "contacts_agg"."period",
            "contacts_agg"."channel"
          FROM "contacts_agg"
        ) AS "observed_keys"
      ) AS "observed"
    ) AS "keys"
    LEFT JOIN "contacts_agg"
      ON "keys"."period" IS NOT DISTINCT FROM "contacts_agg"."period"
      AND "keys"."channel" IS NOT DISTINCT FROM "contacts_agg"."channel"
  ) AS "series"
) AS "windowed"
WHERE
  "windowed"."period" >= CAST('2025-01-01' AS DATE)
ORDER BY
  "period" ASC,
  "channel" ASC;
