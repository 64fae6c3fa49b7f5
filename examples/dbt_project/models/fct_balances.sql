-- Account balance snapshots: a customer reports on the days it likes.
select balance_id, customer_id, snapshot_date, balance from {{ ref('raw_balances') }}
