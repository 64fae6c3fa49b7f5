-- One row per customer.
select customer_id, region, signed_up_at from {{ ref('raw_customers') }}
