-- Benchmark corpus: 100 statements an analyst or an agent sends to DuckDB, from one-liners
-- to 40-line analytic queries.  Each statement starts at a "-- name:" line and runs to
-- the next one.  Tables: orders, order_items, products, customers (warehouse source,
-- ssn/dob sensitive), events, stores, returns, plus files under data/raw/ and scratch/.
-- The benchmark only classifies them; they do not need to run.

-- name: count_orders
SELECT count(*) FROM orders

-- name: select_star_limit
SELECT * FROM orders LIMIT 10

-- name: from_first
FROM products

-- name: describe
DESCRIBE orders

-- name: show_tables
SHOW TABLES

-- name: summarize
SUMMARIZE products

-- name: distinct_status
SELECT DISTINCT status FROM orders ORDER BY status

-- name: recent_orders
SELECT order_id, amount FROM orders WHERE order_date >= DATE '2024-01-01'

-- name: sum_by_channel
SELECT channel, sum(amount) AS revenue FROM orders GROUP BY channel

-- name: top_products
SELECT product_id, name, price FROM products ORDER BY price DESC LIMIT 20

-- name: customer_region
SELECT region, count(*) AS n FROM customers GROUP BY ALL

-- name: event_pages
SELECT page, count(*) FROM events WHERE event = 'view' GROUP BY page

-- name: avg_amount
SELECT avg(amount), median(amount), max(amount) FROM orders

-- name: quoted_ident
SELECT "order_id", "Amount" FROM "orders" WHERE "status" = 'paid'

-- name: mixed_case
select Order_Id, AMOUNT from Orders where Status <> 'cancelled'

-- name: star_exclude
SELECT * EXCLUDE (ssn, dob) FROM customers LIMIT 100

-- name: columns_regex
SELECT COLUMNS('amount|qty') FROM order_items JOIN orders USING (order_id)

-- name: read_parquet
SELECT * FROM read_parquet('data/raw/events/*.parquet') LIMIT 1000

-- name: read_csv
SELECT count(*) FROM read_csv('data/raw/payments.csv', header = true)

-- name: parquet_as_table
SELECT user_id, ts FROM 'data/raw/events/2024-01.parquet' WHERE event = 'purchase'

-- name: in_list
SELECT * FROM orders WHERE status IN ('paid', 'shipped', 'delivered')

-- name: between_dates
SELECT order_id FROM orders WHERE order_date BETWEEN '2024-03-01' AND '2024-03-31'

-- name: like_filter
SELECT name, email FROM customers WHERE email LIKE '%@example.com'

-- name: case_expression
SELECT order_id, CASE WHEN amount > 100 THEN 'big' ELSE 'small' END AS size FROM orders

-- name: simple_join
SELECT o.order_id, c.region FROM orders o JOIN customers c ON o.customer_id = c.customer_id

-- name: using_join
SELECT * FROM order_items JOIN products USING (product_id) LIMIT 50

-- name: create_temp
CREATE TEMP TABLE my_orders AS SELECT * FROM orders WHERE channel = 'web'

-- name: insert_own
INSERT INTO my_orders SELECT * FROM orders WHERE channel = 'app'

-- name: update_own
UPDATE my_orders SET amount = amount * 1.2 WHERE status = 'paid'

-- name: delete_own
DELETE FROM my_orders WHERE amount < 0

-- name: drop_own
DROP TABLE IF EXISTS my_orders

-- name: copy_to_scratch
COPY (SELECT channel, sum(amount) FROM orders GROUP BY channel) TO 'scratch/revenue.parquet' (FORMAT parquet)

-- name: attach_read_only
ATTACH 'data/warehouse.duckdb' AS wh (READ_ONLY)

-- name: use_catalog
USE wh

-- name: set_threads
SET threads = 2

-- name: pragma_version
PRAGMA version

-- name: install_ext
INSTALL httpfs

-- name: load_ext
LOAD json

-- name: create_view
CREATE OR REPLACE TEMP VIEW paid AS
SELECT * FROM orders
WHERE status = 'paid'

-- name: window_rank
SELECT customer_id, order_id, amount,
       rank() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS r
FROM orders

-- name: monthly_revenue
SELECT date_trunc('month', order_date) AS month,
       sum(amount) AS revenue,
       count(DISTINCT customer_id) AS buyers
FROM orders
WHERE status <> 'cancelled'
GROUP BY 1
ORDER BY 1

-- name: revenue_by_category
SELECT p.category,
       sum(oi.qty * oi.unit_price * (1 - oi.discount)) AS revenue,
       sum(oi.qty) AS units
FROM order_items oi
JOIN products p ON p.product_id = oi.product_id
GROUP BY p.category
ORDER BY revenue DESC

-- name: cte_simple
WITH big AS (
    SELECT * FROM orders WHERE amount > 500
)
SELECT channel, count(*) FROM big GROUP BY channel

-- name: union_all
SELECT 'web' AS src, count(*) AS n FROM orders WHERE channel = 'web'
UNION ALL
SELECT 'app', count(*) FROM orders WHERE channel = 'app'
UNION ALL
SELECT 'store', count(*) FROM orders WHERE channel = 'store'

-- name: subquery_in
SELECT name, region
FROM customers
WHERE customer_id IN (
    SELECT customer_id FROM orders WHERE amount > 1000
)

-- name: exists_subquery
SELECT p.product_id, p.name
FROM products p
WHERE NOT EXISTS (
    SELECT 1 FROM order_items oi WHERE oi.product_id = p.product_id
)

-- name: left_join_nulls
SELECT c.customer_id, c.name, count(o.order_id) AS orders
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.customer_id
GROUP BY c.customer_id, c.name
HAVING count(o.order_id) = 0

-- name: pivot_channel
PIVOT (SELECT channel, date_part('year', order_date) AS yr, amount FROM orders)
ON channel
USING sum(amount)
GROUP BY yr

-- name: unpivot_metrics
UNPIVOT (SELECT store_id, revenue, costs, margin FROM store_monthly)
ON revenue, costs, margin
INTO NAME metric VALUE value

-- name: qualify_latest
SELECT customer_id, order_id, order_date
FROM orders
QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY order_date DESC) = 1

-- name: moving_average
SELECT order_date,
       sum(amount) AS revenue,
       avg(sum(amount)) OVER (ORDER BY order_date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS ma7
FROM orders
GROUP BY order_date
ORDER BY order_date

-- name: percentiles
SELECT channel,
       quantile_cont(amount, 0.5) AS p50,
       quantile_cont(amount, 0.9) AS p90,
       quantile_cont(amount, 0.99) AS p99
FROM orders
GROUP BY channel

-- name: json_extract
SELECT user_id,
       json_extract_string(payload, '$.utm.source') AS source,
       count(*) AS n
FROM events
WHERE event = 'signup'
GROUP BY ALL

-- name: string_agg
SELECT o.order_id,
       string_agg(p.name, ', ' ORDER BY p.name) AS items
FROM orders o
JOIN order_items oi USING (order_id)
JOIN products p USING (product_id)
GROUP BY o.order_id

-- name: sessions_per_device
SELECT device,
       count(DISTINCT session_id) AS sessions,
       count(*) / count(DISTINCT session_id) AS events_per_session
FROM read_parquet('data/raw/events/*.parquet')
GROUP BY device
ORDER BY sessions DESC

-- name: returns_rate
SELECT p.category,
       count(r.order_id)::DOUBLE / count(oi.order_id) AS return_rate
FROM order_items oi
JOIN products p USING (product_id)
LEFT JOIN returns r ON r.order_id = oi.order_id AND r.product_id = oi.product_id
GROUP BY p.category
ORDER BY return_rate DESC

-- name: create_scratch_table
CREATE TABLE scratch_summary AS
SELECT region, segment, count(*) AS customers
FROM customers
GROUP BY region, segment

-- name: insert_values
INSERT INTO my_notes (id, note, created)
VALUES (1, 'checked March totals', now()),
       (2, 'web channel dip on 14th', now())

-- name: merge_own
MERGE INTO my_targets t
USING (SELECT region, sum(amount) AS actual FROM orders JOIN customers USING (customer_id) GROUP BY region) a
ON t.region = a.region
WHEN MATCHED THEN UPDATE SET actual = a.actual
WHEN NOT MATCHED THEN INSERT (region, actual) VALUES (a.region, a.actual)

-- name: struct_unnest
SELECT order_id, unnest(tags) AS tag
FROM (
    SELECT order_id, string_split(tag_list, ',') AS tags
    FROM orders
)
WHERE tag <> ''

-- name: asof_join
SELECT e.user_id, e.ts, o.order_id
FROM events e
ASOF JOIN orders o
  ON e.user_id = o.customer_id AND e.ts >= o.order_date

-- name: date_spine
SELECT d::DATE AS day, coalesce(sum(o.amount), 0) AS revenue
FROM range(DATE '2024-01-01', DATE '2024-04-01', INTERVAL 1 DAY) t(d)
LEFT JOIN orders o ON o.order_date = d::DATE
GROUP BY 1
ORDER BY 1

-- name: cohort_sizes
SELECT date_trunc('month', signup_date) AS cohort,
       segment,
       count(*) AS customers
FROM customers
GROUP BY ALL
ORDER BY cohort, segment

-- name: lag_growth
SELECT month,
       revenue,
       revenue / lag(revenue) OVER (ORDER BY month) - 1 AS growth
FROM (
    SELECT date_trunc('month', order_date) AS month, sum(amount) AS revenue
    FROM orders
    GROUP BY 1
)
ORDER BY month

-- name: store_ranking
SELECT s.city, s.region, sum(o.amount) AS revenue,
       dense_rank() OVER (PARTITION BY s.region ORDER BY sum(o.amount) DESC) AS rank_in_region
FROM orders o
JOIN stores s USING (store_id)
WHERE o.channel = 'store'
GROUP BY s.city, s.region

-- name: customers_ssn
SELECT customer_id, name, ssn
FROM customers
WHERE region = 'EU'

-- name: customers_dob
SELECT date_part('year', dob) AS birth_year, count(*)
FROM customers
GROUP BY 1

-- name: funnel
WITH steps AS (
    SELECT session_id,
           max(CASE WHEN event = 'view' THEN 1 ELSE 0 END) AS viewed,
           max(CASE WHEN event = 'add_to_cart' THEN 1 ELSE 0 END) AS carted,
           max(CASE WHEN event = 'checkout' THEN 1 ELSE 0 END) AS checked_out,
           max(CASE WHEN event = 'purchase' THEN 1 ELSE 0 END) AS purchased
    FROM events
    WHERE ts >= now() - INTERVAL 30 DAY
    GROUP BY session_id
)
SELECT sum(viewed) AS views,
       sum(carted) AS carts,
       sum(checked_out) AS checkouts,
       sum(purchased) AS purchases,
       round(100.0 * sum(purchased) / nullif(sum(viewed), 0), 2) AS conversion_pct
FROM steps

-- name: cohort_retention
WITH first_orders AS (
    SELECT customer_id, min(order_date) AS first_date
    FROM orders
    WHERE status <> 'cancelled'
    GROUP BY customer_id
),
cohorts AS (
    SELECT customer_id, date_trunc('month', first_date) AS cohort
    FROM first_orders
),
activity AS (
    SELECT o.customer_id,
           c.cohort,
           date_diff('month', c.cohort, date_trunc('month', o.order_date)) AS months_since
    FROM orders o
    JOIN cohorts c USING (customer_id)
    WHERE o.status <> 'cancelled'
),
sizes AS (
    SELECT cohort, count(*) AS size FROM cohorts GROUP BY cohort
)
SELECT a.cohort,
       a.months_since,
       count(DISTINCT a.customer_id) AS active,
       s.size,
       round(count(DISTINCT a.customer_id) / s.size, 3) AS retention
FROM activity a
JOIN sizes s USING (cohort)
WHERE a.months_since BETWEEN 0 AND 12
GROUP BY a.cohort, a.months_since, s.size
ORDER BY a.cohort, a.months_since

-- name: rfm_segments
WITH base AS (
    SELECT customer_id,
           date_diff('day', max(order_date), DATE '2024-06-30') AS recency,
           count(*) AS frequency,
           sum(amount) AS monetary
    FROM orders
    WHERE status IN ('paid', 'shipped', 'delivered')
    GROUP BY customer_id
),
scored AS (
    SELECT customer_id,
           ntile(5) OVER (ORDER BY recency DESC) AS r,
           ntile(5) OVER (ORDER BY frequency) AS f,
           ntile(5) OVER (ORDER BY monetary) AS m
    FROM base
)
SELECT CASE
         WHEN r >= 4 AND f >= 4 AND m >= 4 THEN 'champions'
         WHEN r >= 3 AND f >= 3 THEN 'loyal'
         WHEN r >= 4 AND f <= 2 THEN 'new'
         WHEN r <= 2 AND f >= 3 THEN 'at risk'
         WHEN r <= 2 AND f <= 2 THEN 'lost'
         ELSE 'others'
       END AS segment,
       count(*) AS customers,
       avg(r) AS avg_r,
       avg(f) AS avg_f,
       avg(m) AS avg_m
FROM scored
GROUP BY segment
ORDER BY customers DESC

-- name: basket_pairs
WITH items AS (
    SELECT DISTINCT oi.order_id, p.category
    FROM order_items oi
    JOIN products p USING (product_id)
    JOIN orders o USING (order_id)
    WHERE o.status <> 'cancelled'
      AND o.order_date >= DATE '2024-01-01'
),
pairs AS (
    SELECT a.category AS left_cat,
           b.category AS right_cat,
           count(*) AS together
    FROM items a
    JOIN items b ON a.order_id = b.order_id AND a.category < b.category
    GROUP BY 1, 2
),
singles AS (
    SELECT category, count(*) AS alone FROM items GROUP BY category
)
SELECT p.left_cat,
       p.right_cat,
       p.together,
       round(p.together / sl.alone, 4) AS confidence,
       round(p.together * (SELECT count(DISTINCT order_id) FROM items)
             / (sl.alone * sr.alone), 3) AS lift
FROM pairs p
JOIN singles sl ON sl.category = p.left_cat
JOIN singles sr ON sr.category = p.right_cat
WHERE p.together >= 20
ORDER BY lift DESC
LIMIT 50

-- name: daily_kpis
WITH daily AS (
    SELECT order_date AS day,
           count(*) AS orders,
           count(DISTINCT customer_id) AS buyers,
           sum(amount) AS revenue,
           sum(amount) FILTER (WHERE channel = 'web') AS web_revenue,
           sum(amount) FILTER (WHERE channel = 'app') AS app_revenue,
           sum(amount) FILTER (WHERE channel = 'store') AS store_revenue
    FROM orders
    WHERE status <> 'cancelled'
    GROUP BY order_date
),
visits AS (
    SELECT ts::DATE AS day, count(DISTINCT session_id) AS sessions
    FROM events
    GROUP BY 1
)
SELECT d.day,
       d.orders,
       d.buyers,
       d.revenue,
       d.web_revenue,
       d.app_revenue,
       d.store_revenue,
       v.sessions,
       round(d.orders / nullif(v.sessions, 0), 4) AS conversion,
       avg(d.revenue) OVER (ORDER BY d.day ROWS 6 PRECEDING) AS revenue_7d,
       d.revenue - lag(d.revenue, 7) OVER (ORDER BY d.day) AS wow_change
FROM daily d
LEFT JOIN visits v USING (day)
ORDER BY d.day

-- name: product_margin
WITH sales AS (
    SELECT oi.product_id,
           sum(oi.qty) AS units,
           sum(oi.qty * oi.unit_price * (1 - oi.discount)) AS net_revenue
    FROM order_items oi
    JOIN orders o USING (order_id)
    WHERE o.status IN ('paid', 'shipped', 'delivered')
    GROUP BY oi.product_id
),
refunds AS (
    SELECT r.product_id, count(*) AS returned_units
    FROM returns r
    GROUP BY r.product_id
),
costs AS (
    SELECT product_id, unit_cost
    FROM read_csv('data/raw/product_costs.csv', header = true)
)
SELECT p.category,
       p.brand,
       p.name,
       s.units,
       coalesce(rf.returned_units, 0) AS returned,
       s.net_revenue,
       s.units * c.unit_cost AS cost,
       s.net_revenue - s.units * c.unit_cost AS margin,
       round((s.net_revenue - s.units * c.unit_cost) / nullif(s.net_revenue, 0), 3) AS margin_pct
FROM sales s
JOIN products p USING (product_id)
LEFT JOIN refunds rf USING (product_id)
LEFT JOIN costs c USING (product_id)
WHERE s.units > 0
ORDER BY margin DESC

-- name: session_paths
WITH ordered AS (
    SELECT session_id,
           user_id,
           page,
           ts,
           row_number() OVER (PARTITION BY session_id ORDER BY ts) AS step,
           lead(page) OVER (PARTITION BY session_id ORDER BY ts) AS next_page,
           date_diff('second', ts, lead(ts) OVER (PARTITION BY session_id ORDER BY ts)) AS dwell_s
    FROM read_parquet('data/raw/events/*.parquet')
    WHERE event = 'view'
),
transitions AS (
    SELECT page,
           next_page,
           count(*) AS n,
           median(dwell_s) AS median_dwell_s
    FROM ordered
    WHERE next_page IS NOT NULL
    GROUP BY page, next_page
),
totals AS (
    SELECT page, sum(n) AS out_n FROM transitions GROUP BY page
)
SELECT t.page,
       t.next_page,
       t.n,
       round(t.n / tt.out_n, 3) AS share,
       t.median_dwell_s,
       rank() OVER (PARTITION BY t.page ORDER BY t.n DESC) AS rnk
FROM transitions t
JOIN totals tt USING (page)
QUALIFY rnk <= 5
ORDER BY t.page, rnk

-- name: customer_ltv
WITH orders_clean AS (
    SELECT o.order_id,
           o.customer_id,
           o.order_date,
           o.amount - coalesce(r.refund, 0) AS net_amount
    FROM orders o
    LEFT JOIN (
        SELECT order_id, sum(oi.unit_price * oi.qty) AS refund
        FROM returns
        JOIN order_items oi USING (order_id, product_id)
        GROUP BY order_id
    ) r USING (order_id)
    WHERE o.status <> 'cancelled'
),
per_customer AS (
    SELECT customer_id,
           min(order_date) AS first_order,
           max(order_date) AS last_order,
           count(*) AS orders,
           sum(net_amount) AS lifetime_value
    FROM orders_clean
    GROUP BY customer_id
)
SELECT c.region,
       c.segment,
       count(*) AS customers,
       avg(pc.orders) AS avg_orders,
       avg(pc.lifetime_value) AS avg_ltv,
       quantile_cont(pc.lifetime_value, 0.9) AS p90_ltv,
       avg(date_diff('day', pc.first_order, pc.last_order)) AS avg_tenure_days
FROM per_customer pc
JOIN customers c USING (customer_id)
GROUP BY ALL
ORDER BY avg_ltv DESC

-- name: anomaly_zscore
WITH hourly AS (
    SELECT date_trunc('hour', ts) AS hour,
           page,
           count(*) AS views
    FROM events
    WHERE event = 'view'
      AND ts >= now() - INTERVAL 14 DAY
    GROUP BY 1, 2
),
stats AS (
    SELECT page,
           avg(views) AS mean_views,
           stddev_samp(views) AS sd_views
    FROM hourly
    GROUP BY page
)
SELECT h.hour,
       h.page,
       h.views,
       s.mean_views,
       s.sd_views,
       (h.views - s.mean_views) / nullif(s.sd_views, 0) AS z
FROM hourly h
JOIN stats s USING (page)
WHERE abs((h.views - s.mean_views) / nullif(s.sd_views, 0)) > 3
ORDER BY abs(z) DESC
LIMIT 100

-- name: channel_mix_pivot
WITH monthly AS (
    SELECT date_trunc('month', o.order_date) AS month,
           c.region,
           o.channel,
           sum(o.amount) AS revenue
    FROM orders o
    JOIN customers c USING (customer_id)
    WHERE o.status <> 'cancelled'
      AND o.order_date >= DATE '2023-01-01'
    GROUP BY ALL
),
shares AS (
    SELECT month,
           region,
           channel,
           revenue,
           revenue / sum(revenue) OVER (PARTITION BY month, region) AS share
    FROM monthly
)
SELECT month,
       region,
       max(share) FILTER (WHERE channel = 'web') AS web_share,
       max(share) FILTER (WHERE channel = 'app') AS app_share,
       max(share) FILTER (WHERE channel = 'store') AS store_share,
       sum(revenue) AS revenue,
       sum(revenue) - lag(sum(revenue)) OVER (PARTITION BY region ORDER BY month) AS mom
FROM shares
GROUP BY month, region
ORDER BY region, month

-- name: inventory_turns
WITH stock AS (
    SELECT product_id,
           snapshot_date,
           on_hand
    FROM read_parquet('data/raw/inventory/*.parquet')
    WHERE snapshot_date >= DATE '2024-01-01'
),
avg_stock AS (
    SELECT product_id, avg(on_hand) AS avg_on_hand
    FROM stock
    GROUP BY product_id
),
sold AS (
    SELECT oi.product_id, sum(oi.qty) AS units_sold
    FROM order_items oi
    JOIN orders o USING (order_id)
    WHERE o.order_date >= DATE '2024-01-01'
      AND o.status IN ('paid', 'shipped', 'delivered')
    GROUP BY oi.product_id
)
SELECT p.category,
       p.product_id,
       p.name,
       s.units_sold,
       a.avg_on_hand,
       round(s.units_sold / nullif(a.avg_on_hand, 0), 2) AS turns,
       CASE
         WHEN s.units_sold / nullif(a.avg_on_hand, 0) < 1 THEN 'slow'
         WHEN s.units_sold / nullif(a.avg_on_hand, 0) < 4 THEN 'normal'
         ELSE 'fast'
       END AS speed
FROM products p
LEFT JOIN sold s USING (product_id)
LEFT JOIN avg_stock a USING (product_id)
ORDER BY turns NULLS LAST

-- name: churn_features
WITH last_90 AS (
    SELECT customer_id,
           count(*) AS orders_90d,
           sum(amount) AS spend_90d
    FROM orders
    WHERE order_date >= DATE '2024-06-30' - INTERVAL 90 DAY
    GROUP BY customer_id
),
prior_90 AS (
    SELECT customer_id,
           count(*) AS orders_prior,
           sum(amount) AS spend_prior
    FROM orders
    WHERE order_date >= DATE '2024-06-30' - INTERVAL 180 DAY
      AND order_date < DATE '2024-06-30' - INTERVAL 90 DAY
    GROUP BY customer_id
),
engagement AS (
    SELECT user_id AS customer_id,
           count(DISTINCT session_id) AS sessions_90d
    FROM events
    WHERE ts >= DATE '2024-06-30' - INTERVAL 90 DAY
    GROUP BY 1
)
SELECT c.customer_id,
       c.segment,
       c.region,
       coalesce(l.orders_90d, 0) AS orders_90d,
       coalesce(p.orders_prior, 0) AS orders_prior,
       coalesce(l.spend_90d, 0) - coalesce(p.spend_prior, 0) AS spend_delta,
       coalesce(e.sessions_90d, 0) AS sessions_90d,
       (coalesce(l.orders_90d, 0) = 0 AND coalesce(p.orders_prior, 0) > 0) AS churned
FROM customers c
LEFT JOIN last_90 l USING (customer_id)
LEFT JOIN prior_90 p USING (customer_id)
LEFT JOIN engagement e USING (customer_id)

-- name: store_benchmark
WITH store_month AS (
    SELECT s.store_id,
           s.city,
           s.region,
           date_trunc('month', o.order_date) AS month,
           sum(o.amount) AS revenue,
           count(*) AS orders
    FROM orders o
    JOIN stores s USING (store_id)
    WHERE o.channel = 'store'
      AND o.status <> 'cancelled'
    GROUP BY ALL
),
region_month AS (
    SELECT region,
           month,
           median(revenue) AS median_revenue,
           quantile_cont(revenue, 0.25) AS q1,
           quantile_cont(revenue, 0.75) AS q3
    FROM store_month
    GROUP BY region, month
)
SELECT sm.city,
       sm.region,
       sm.month,
       sm.revenue,
       rm.median_revenue,
       sm.revenue / rm.median_revenue AS vs_median,
       CASE
         WHEN sm.revenue < rm.q1 - 1.5 * (rm.q3 - rm.q1) THEN 'low outlier'
         WHEN sm.revenue > rm.q3 + 1.5 * (rm.q3 - rm.q1) THEN 'high outlier'
         ELSE 'typical'
       END AS flag
FROM store_month sm
JOIN region_month rm USING (region, month)
ORDER BY sm.region, sm.month, vs_median

-- name: attribution_last_touch
WITH touches AS (
    SELECT user_id,
           ts,
           json_extract_string(payload, '$.utm.source') AS source,
           json_extract_string(payload, '$.utm.campaign') AS campaign
    FROM events
    WHERE event = 'landing'
),
purchases AS (
    SELECT customer_id AS user_id,
           order_id,
           order_date AS ts,
           amount
    FROM orders
    WHERE status IN ('paid', 'shipped', 'delivered')
),
attributed AS (
    SELECT p.order_id,
           p.amount,
           t.source,
           t.campaign,
           row_number() OVER (PARTITION BY p.order_id ORDER BY t.ts DESC) AS rn
    FROM purchases p
    JOIN touches t
      ON t.user_id = p.user_id
     AND t.ts <= p.ts
     AND t.ts >= p.ts - INTERVAL 30 DAY
)
SELECT coalesce(source, '(direct)') AS source,
       coalesce(campaign, '(none)') AS campaign,
       count(*) AS orders,
       sum(amount) AS revenue,
       avg(amount) AS aov
FROM attributed
WHERE rn = 1
GROUP BY ALL
ORDER BY revenue DESC

-- name: price_elasticity
WITH weekly AS (
    SELECT oi.product_id,
           date_trunc('week', o.order_date) AS week,
           avg(oi.unit_price * (1 - oi.discount)) AS avg_price,
           sum(oi.qty) AS units
    FROM order_items oi
    JOIN orders o USING (order_id)
    WHERE o.status <> 'cancelled'
    GROUP BY 1, 2
),
logs AS (
    SELECT product_id,
           week,
           ln(avg_price) AS log_p,
           ln(units) AS log_q
    FROM weekly
    WHERE avg_price > 0 AND units > 0
),
fits AS (
    SELECT product_id,
           regr_slope(log_q, log_p) AS elasticity,
           regr_r2(log_q, log_p) AS r2,
           count(*) AS weeks
    FROM logs
    GROUP BY product_id
)
SELECT p.category,
       p.name,
       f.elasticity,
       f.r2,
       f.weeks
FROM fits f
JOIN products p USING (product_id)
WHERE f.weeks >= 12
ORDER BY f.elasticity

-- name: delivery_sla
WITH shipments AS (
    SELECT order_id,
           carrier,
           shipped_at,
           delivered_at,
           date_diff('hour', shipped_at, delivered_at) AS hours
    FROM read_csv('data/raw/shipments.csv', header = true, timestampformat = '%Y-%m-%d %H:%M:%S')
    WHERE delivered_at IS NOT NULL
),
joined AS (
    SELECT s.*, o.channel, c.region
    FROM shipments s
    JOIN orders o USING (order_id)
    JOIN customers c ON c.customer_id = o.customer_id
)
SELECT carrier,
       region,
       count(*) AS shipments,
       median(hours) AS median_hours,
       quantile_cont(hours, 0.95) AS p95_hours,
       avg(CASE WHEN hours <= 48 THEN 1 ELSE 0 END) AS within_48h,
       avg(CASE WHEN hours <= 72 THEN 1 ELSE 0 END) AS within_72h,
       max(hours) AS worst_hours
FROM joined
GROUP BY carrier, region
HAVING count(*) >= 50
ORDER BY within_48h DESC

-- name: copy_report_scratch
COPY (
    WITH monthly AS (
        SELECT date_trunc('month', order_date) AS month,
               channel,
               sum(amount) AS revenue,
               count(*) AS orders
        FROM orders
        WHERE status <> 'cancelled'
        GROUP BY ALL
    ),
    totals AS (
        SELECT month, sum(revenue) AS total FROM monthly GROUP BY month
    )
    SELECT m.month,
           m.channel,
           m.revenue,
           m.orders,
           round(m.revenue / t.total, 4) AS share,
           m.revenue - lag(m.revenue) OVER (PARTITION BY m.channel ORDER BY m.month) AS mom
    FROM monthly m
    JOIN totals t USING (month)
    ORDER BY m.month, m.channel
) TO 'scratch/monthly_channel_report.csv' (HEADER, DELIMITER ',')

-- name: create_scratch_model
CREATE OR REPLACE TABLE customer_features AS
WITH spend AS (
    SELECT customer_id,
           sum(amount) AS total_spend,
           count(*) AS orders,
           max(order_date) AS last_order
    FROM orders
    WHERE status <> 'cancelled'
    GROUP BY customer_id
),
web AS (
    SELECT user_id AS customer_id,
           count(*) FILTER (WHERE event = 'view') AS views,
           count(*) FILTER (WHERE event = 'add_to_cart') AS carts
    FROM events
    GROUP BY 1
)
SELECT c.customer_id,
       c.region,
       c.segment,
       date_diff('day', c.signup_date, DATE '2024-06-30') AS tenure_days,
       coalesce(s.total_spend, 0) AS total_spend,
       coalesce(s.orders, 0) AS orders,
       date_diff('day', s.last_order, DATE '2024-06-30') AS days_since_order,
       coalesce(w.views, 0) AS views,
       coalesce(w.carts, 0) AS carts,
       coalesce(w.carts, 0) / nullif(w.views, 0) AS cart_rate
FROM customers c
LEFT JOIN spend s USING (customer_id)
LEFT JOIN web w USING (customer_id)

-- name: union_channels_detail
SELECT 'web' AS channel, date_trunc('week', o.order_date) AS week, count(*) AS orders, sum(o.amount) AS revenue
FROM orders o
WHERE o.channel = 'web' AND o.status <> 'cancelled'
GROUP BY 2
UNION ALL
SELECT 'app', date_trunc('week', o.order_date), count(*), sum(o.amount)
FROM orders o
WHERE o.channel = 'app' AND o.status <> 'cancelled'
GROUP BY 2
UNION ALL
SELECT 'store', date_trunc('week', o.order_date), count(*), sum(o.amount)
FROM orders o
JOIN stores s USING (store_id)
WHERE o.channel = 'store' AND o.status <> 'cancelled' AND s.opened < o.order_date
GROUP BY 2
UNION ALL
SELECT 'marketplace', date_trunc('week', m.sold_at), count(*), sum(m.gross)
FROM read_parquet('data/raw/marketplace/*.parquet') m
WHERE m.state = 'settled'
GROUP BY 2
UNION ALL
SELECT 'b2b', date_trunc('week', b.invoice_date), count(*), sum(b.net_total)
FROM read_csv('data/raw/b2b_invoices.csv', header = true) b
WHERE b.paid
GROUP BY 2
EXCEPT
SELECT channel, week, orders, revenue
FROM excluded_weeks
ORDER BY channel, week

-- name: nested_subqueries
SELECT region,
       segment,
       avg_spend,
       rank_in_region
FROM (
    SELECT region,
           segment,
           avg_spend,
           rank() OVER (PARTITION BY region ORDER BY avg_spend DESC) AS rank_in_region
    FROM (
        SELECT c.region,
               c.segment,
               avg(t.spend) AS avg_spend
        FROM customers c
        JOIN (
            SELECT customer_id, sum(amount) AS spend
            FROM orders
            WHERE order_id IN (
                SELECT order_id
                FROM order_items
                WHERE product_id IN (
                    SELECT product_id
                    FROM products
                    WHERE category IN ('outdoor', 'garden')
                )
            )
            GROUP BY customer_id
        ) t USING (customer_id)
        GROUP BY c.region, c.segment
    )
)
WHERE rank_in_region <= 3
ORDER BY region, rank_in_region

-- name: comments_and_hints
/* weekly report for the ops review:
   revenue, orders and returns by region */
WITH w AS (
    -- orders that count as sales
    SELECT date_trunc('week', order_date) AS week,
           customer_id,
           order_id,
           amount
    FROM orders
    WHERE status IN ('paid', 'shipped', 'delivered')  -- not 'cancelled'
),
r AS (
    /* returns are attributed to the week of the order, not of the return */
    SELECT w.week, count(*) AS returns
    FROM returns
    JOIN w USING (order_id)
    GROUP BY w.week
)
SELECT w.week,
       c.region,
       count(*) AS orders,
       sum(w.amount) AS revenue,
       any_value(r.returns) AS returns  -- one value per week
FROM w
JOIN customers c USING (customer_id)
LEFT JOIN r USING (week)
GROUP BY w.week, c.region
ORDER BY w.week DESC, revenue DESC

-- name: window_frames
SELECT customer_id,
       order_date,
       amount,
       sum(amount) OVER w_all AS running_total,
       avg(amount) OVER w_3 AS avg_last_3,
       count(*) OVER w_30d AS orders_30d,
       first_value(amount) OVER w_all AS first_amount,
       last_value(amount) OVER (PARTITION BY customer_id ORDER BY order_date
                                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_amount,
       amount - lag(amount) OVER w_all AS change,
       percent_rank() OVER (PARTITION BY customer_id ORDER BY amount) AS pct_rank,
       cume_dist() OVER (PARTITION BY customer_id ORDER BY amount) AS cume
FROM orders
WHERE status <> 'cancelled'
WINDOW w_all AS (PARTITION BY customer_id ORDER BY order_date),
       w_3 AS (PARTITION BY customer_id ORDER BY order_date ROWS BETWEEN 2 PRECEDING AND CURRENT ROW),
       w_30d AS (PARTITION BY customer_id ORDER BY order_date
                 RANGE BETWEEN INTERVAL 30 DAY PRECEDING AND CURRENT ROW)
QUALIFY row_number() OVER w_all <= 100
ORDER BY customer_id, order_date
LIMIT 5000
-- more rows follow in the notebook's next query
-- (kept in one statement for the report)
-- window names keep the frames readable
-- end

-- name: grouping_sets
SELECT coalesce(c.region, '(all)') AS region,
       coalesce(o.channel, '(all)') AS channel,
       coalesce(p.category, '(all)') AS category,
       grouping(c.region, o.channel, p.category) AS level,
       count(DISTINCT o.order_id) AS orders,
       sum(oi.qty) AS units,
       sum(oi.qty * oi.unit_price) AS gross,
       sum(oi.qty * oi.unit_price * oi.discount) AS discounts
FROM orders o
JOIN customers c USING (customer_id)
JOIN order_items oi USING (order_id)
JOIN products p USING (product_id)
WHERE o.status <> 'cancelled'
  AND o.order_date >= DATE '2024-01-01'
GROUP BY GROUPING SETS (
    (c.region, o.channel, p.category),
    (c.region, o.channel),
    (c.region),
    (o.channel, p.category),
    (p.category),
    ()
)
HAVING sum(oi.qty) > 0
ORDER BY level, region, channel, category

-- name: experiment_readout
WITH assignment AS (
    SELECT user_id,
           json_extract_string(payload, '$.experiment') AS experiment,
           json_extract_string(payload, '$.variant') AS variant,
           min(ts) AS assigned_at
    FROM events
    WHERE event = 'experiment_assigned'
    GROUP BY 1, 2, 3
),
outcomes AS (
    SELECT a.experiment,
           a.variant,
           a.user_id,
           count(o.order_id) AS orders,
           coalesce(sum(o.amount), 0) AS revenue
    FROM assignment a
    LEFT JOIN orders o
      ON o.customer_id = a.user_id
     AND o.order_date >= a.assigned_at
     AND o.order_date < a.assigned_at + INTERVAL 14 DAY
    GROUP BY ALL
),
summary AS (
    SELECT experiment,
           variant,
           count(*) AS users,
           avg(CASE WHEN orders > 0 THEN 1 ELSE 0 END) AS conversion,
           avg(revenue) AS arpu,
           stddev_samp(revenue) AS sd_revenue
    FROM outcomes
    GROUP BY experiment, variant
)
SELECT s.*,
       s.arpu - first_value(s.arpu) OVER (PARTITION BY experiment ORDER BY variant) AS arpu_lift,
       s.sd_revenue / sqrt(s.users) AS se_arpu,
       (s.arpu - first_value(s.arpu) OVER (PARTITION BY experiment ORDER BY variant))
         / nullif(s.sd_revenue / sqrt(s.users), 0) AS z
FROM summary s
ORDER BY experiment, variant

-- name: supplier_scorecard
WITH deliveries AS (
    SELECT d.supplier_id,
           d.po_number,
           d.expected_date,
           d.received_date,
           d.qty_ordered,
           d.qty_received,
           date_diff('day', d.expected_date, d.received_date) AS days_late
    FROM read_parquet('data/raw/purchase_orders/*.parquet') d
    WHERE d.expected_date >= DATE '2024-01-01'
),
quality AS (
    SELECT supplier_id,
           count(*) FILTER (WHERE reason = 'defect') AS defects,
           count(*) AS returns
    FROM returns
    JOIN products USING (product_id)
    GROUP BY supplier_id
),
scores AS (
    SELECT dl.supplier_id,
           count(*) AS pos,
           avg(CASE WHEN dl.days_late <= 0 THEN 1 ELSE 0 END) AS on_time,
           avg(dl.qty_received / nullif(dl.qty_ordered, 0)) AS fill_rate,
           max(dl.days_late) AS worst_delay,
           any_value(q.defects) AS defects,
           any_value(q.returns) AS returns
    FROM deliveries dl
    LEFT JOIN quality q USING (supplier_id)
    GROUP BY dl.supplier_id
)
SELECT supplier_id,
       pos,
       round(on_time, 3) AS on_time,
       round(fill_rate, 3) AS fill_rate,
       worst_delay,
       coalesce(defects, 0) AS defects,
       round(0.5 * on_time + 0.4 * fill_rate - 0.1 * coalesce(defects, 0) / pos, 3) AS score
FROM scores
ORDER BY score DESC

-- name: geo_rollup
WITH geo AS (
    SELECT c.customer_id,
           c.country,
           c.region,
           CASE
             WHEN c.country IN ('DE', 'AT', 'CH') THEN 'DACH'
             WHEN c.country IN ('FR', 'BE', 'LU') THEN 'FR-BENELUX'
             WHEN c.country IN ('NL') THEN 'NL'
             WHEN c.country IN ('SE', 'NO', 'DK', 'FI') THEN 'NORDICS'
             WHEN c.country IN ('ES', 'PT', 'IT') THEN 'SOUTH'
             ELSE 'OTHER'
           END AS market
    FROM customers c
),
sales AS (
    SELECT o.customer_id,
           date_trunc('quarter', o.order_date) AS quarter,
           sum(o.amount) AS revenue
    FROM orders o
    WHERE o.status <> 'cancelled'
    GROUP BY 1, 2
)
SELECT g.market,
       g.country,
       s.quarter,
       count(DISTINCT s.customer_id) AS buyers,
       sum(s.revenue) AS revenue,
       sum(s.revenue) / count(DISTINCT s.customer_id) AS revenue_per_buyer,
       sum(sum(s.revenue)) OVER (PARTITION BY g.market, s.quarter) AS market_revenue,
       sum(s.revenue) / sum(sum(s.revenue)) OVER (PARTITION BY g.market, s.quarter) AS country_share
FROM sales s
JOIN geo g USING (customer_id)
GROUP BY ROLLUP (g.market, g.country, s.quarter)
ORDER BY g.market NULLS LAST, g.country NULLS LAST, s.quarter

-- name: top_customers_region
SELECT c.region,
       c.customer_id,
       c.name,
       sum(o.amount) AS spend,
       count(*) AS orders
FROM orders o
JOIN customers c USING (customer_id)
WHERE o.order_date >= DATE '2024-01-01'
  AND o.status <> 'cancelled'
GROUP BY ALL
QUALIFY rank() OVER (PARTITION BY c.region ORDER BY sum(o.amount) DESC) <= 10
ORDER BY c.region, spend DESC

-- name: hourly_traffic
SELECT hour(ts) AS hour_of_day,
       dayname(ts) AS weekday,
       count(*) AS events,
       count(DISTINCT user_id) AS users,
       count(*) FILTER (WHERE event = 'purchase') AS purchases
FROM events
WHERE ts >= DATE '2024-05-01'
GROUP BY ALL
ORDER BY weekday, hour_of_day

-- name: discount_bands
SELECT CASE
         WHEN discount = 0 THEN 'none'
         WHEN discount < 0.1 THEN '<10%'
         WHEN discount < 0.25 THEN '10-25%'
         ELSE '25%+'
       END AS band,
       count(*) AS lines,
       sum(qty) AS units,
       avg(unit_price) AS avg_price,
       sum(qty * unit_price * discount) AS discount_cost
FROM order_items
GROUP BY band
ORDER BY discount_cost DESC

-- name: new_vs_returning
WITH firsts AS (
    SELECT customer_id, min(order_date) AS first_date
    FROM orders
    GROUP BY customer_id
)
SELECT date_trunc('month', o.order_date) AS month,
       count(*) FILTER (WHERE o.order_date = f.first_date) AS new_orders,
       count(*) FILTER (WHERE o.order_date > f.first_date) AS returning_orders,
       sum(o.amount) FILTER (WHERE o.order_date > f.first_date) AS returning_revenue
FROM orders o
JOIN firsts f USING (customer_id)
GROUP BY 1
ORDER BY 1

-- name: payments_reconcile
SELECT o.order_id,
       o.amount,
       p.captured,
       o.amount - p.captured AS difference,
       p.provider
FROM orders o
FULL OUTER JOIN read_csv('data/raw/payments.csv', header = true) p USING (order_id)
WHERE o.order_id IS NULL
   OR p.order_id IS NULL
   OR abs(o.amount - p.captured) > 0.01
ORDER BY abs(difference) DESC NULLS FIRST
LIMIT 500

-- name: category_share_window
SELECT category,
       brand,
       sum(price) AS list_value,
       sum(price) / sum(sum(price)) OVER (PARTITION BY category) AS share_in_category,
       row_number() OVER (PARTITION BY category ORDER BY sum(price) DESC) AS pos
FROM products
WHERE launched >= DATE '2020-01-01'
GROUP BY category, brand
QUALIFY pos <= 5
ORDER BY category, pos

-- name: scratch_parquet_roundtrip
SELECT region,
       segment,
       avg(total_spend) AS avg_spend,
       avg(cart_rate) AS avg_cart_rate,
       count(*) AS customers
FROM read_parquet('scratch/customer_features.parquet')
WHERE tenure_days > 30
GROUP BY ALL
HAVING count(*) >= 20
ORDER BY avg_spend DESC
