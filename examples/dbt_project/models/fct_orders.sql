-- One row per order.
select order_id, customer_id, ordered_at, shipped_at, amount, discount, status, channel, is_gift
from {{ ref('raw_orders') }}
