"""Ordinary analysis must just work: no denial, no warning, no truncation, nothing on stderr.

The cells run in order through ONE guarded kernel (policies/default.yaml, actor agent),
as an analyst's notebook would.  Each result is kept small (the agent's cap is 500 rows)
and nothing touches ``customers.ssn`` or ``customers.dob``.
"""

from __future__ import annotations

import pytest
from conftest import GuardedKernel

from guard_kernel.demo import Workspace

# (id, cell source, expected text/plain of the cell's value or None)
CELLS: list[tuple[str, str, str | None]] = [
    ("imports", "import io, json, os, pathlib\nimport duckdb\nimport numpy as np\nimport pandas as pd\n"
                "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt", None),
    ("connect", "con = duckdb.connect('data/warehouse.duckdb')", None),
    ("show-tables", "sorted(con.sql('SHOW TABLES').df()['name'])", "['customers', 'orders', 'products']"),
    ("describe", "list(con.sql('DESCRIBE orders').df()['column_name'])[:3]", "['id', 'customer_id', 'order_date']"),
    ("duckdb-tables", "len(con.sql('SELECT table_name FROM duckdb_tables()').fetchall())", "3"),
    ("count", "con.sql('SELECT count(*) FROM orders').fetchall()[0][0]", "20000"),
    ("filter", "len(con.sql(\"SELECT id, amount FROM orders WHERE amount > 450 AND status = 'paid' "
               "ORDER BY amount DESC LIMIT 20\").df())", "20"),
    ("join-group", "by_region = con.sql('SELECT c.region, count(*) AS n, round(sum(o.amount), 2) AS revenue "
                   "FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.region ORDER BY c.region').df()\n"
                   "list(by_region['region'])", "['east', 'north', 'south', 'west']"),
    ("window-running-sum", "len(con.sql('SELECT customer_id, order_date, amount, sum(amount) OVER "
                           "(PARTITION BY customer_id ORDER BY order_date) AS running FROM orders "
                           "WHERE customer_id = 7').df()) > 0", "True"),
    ("window-rank-subquery", "len(con.sql('SELECT * FROM (SELECT region, id, name, row_number() OVER "
                             "(PARTITION BY region ORDER BY id) AS rn FROM customers) WHERE rn <= 3').df())", "12"),
    ("qualify", "len(con.sql('SELECT customer_id, id, amount FROM orders QUALIFY row_number() OVER "
                "(PARTITION BY customer_id ORDER BY amount DESC) = 1 ORDER BY amount DESC LIMIT 10').fetchall())",
     "10"),
    ("pivot-statement", "p = con.sql('PIVOT (SELECT c.region, o.status, o.amount FROM orders o JOIN customers c "
                        "ON c.id = o.customer_id) ON status USING sum(amount) GROUP BY region').df()\nlen(p)", "4"),
    ("cte", "len(con.sql('WITH top AS (SELECT customer_id, sum(amount) AS s FROM orders GROUP BY 1 "
            "ORDER BY 2 DESC LIMIT 10) SELECT t.customer_id, c.name, t.s FROM top t "
            "JOIN customers c ON c.id = t.customer_id').df())", "10"),
    ("from-first", "len(con.sql('FROM products SELECT category, avg(price) AS p GROUP BY category').df())", "5"),
    ("select-star-products", "len(con.sql('SELECT * FROM products ORDER BY id').df())", "50"),
    ("star-exclude", "len(con.sql('SELECT * EXCLUDE (ssn, dob) FROM customers LIMIT 5').df())", "5"),
    ("summarize-orders", "len(con.sql('SUMMARIZE orders').df())", "7"),
    ("string-functions", "len(con.sql('SELECT upper(segment) AS s, count(*) FROM customers GROUP BY 1').df())", "3"),
    ("dates", "len(con.sql(\"SELECT date_trunc('month', order_date) AS m, count(*) FROM orders "
              "GROUP BY 1 ORDER BY 1 LIMIT 12\").fetchall())", "12"),
    ("attach-source-plainly", "c3 = duckdb.connect()\nc3.execute(\"ATTACH 'data/warehouse.duckdb' AS wh\")\n"
                              "c3.sql('SELECT count(*) FROM wh.orders').fetchall()[0][0]", "20000"),
    ("parameters", "con.execute('SELECT count(*) FROM orders WHERE amount > ?', [100]).fetchall()[0][0] > 0", "True"),
    ("read-csv-sql", "len(con.sql(\"SELECT event, count(*) FROM read_csv('data/raw/events.csv') GROUP BY event\")"
                     ".fetchall())", "5"),
    ("read-parquet-sql", "len(con.sql(\"SELECT reason, count(*) FROM 'data/raw/returns.parquet' GROUP BY ALL\")"
                         ".fetchall())", "4"),
    ("pandas-read-small-csv", "regions = pd.read_csv('data/raw/regions.csv')\nregions.shape", "(4, 3)"),
    ("dataframe-scan-by-name", "list(con.sql('SELECT region FROM regions ORDER BY 1').df()['region'])",
     "['east', 'north', 'south', 'west']"),
    ("module-sql-on-dataframe", "duckdb.sql('SELECT count(*) FROM regions').fetchall()[0][0]", "4"),
    ("fetch-small-frame", "orders_small = con.sql('SELECT id, customer_id, amount, status, order_date FROM orders "
                          "WHERE customer_id <= 20').df()\n0 < len(orders_small) < 500", "True"),
    ("groupby-agg", "sorted(orders_small.groupby('status')['amount'].agg(['count', 'sum']).index)",
     "['paid', 'refunded', 'shipped']"),
    ("pivot-table", "orders_small.pivot_table(index='customer_id', columns='status', values='amount', "
                    "aggfunc='sum', fill_value=0).shape[1]", "3"),
    ("merge", "m = orders_small.merge(con.sql('SELECT id AS customer_id, region FROM customers WHERE id <= 20').df(), "
              "on='customer_id')\nlen(m) == len(orders_small)", "True"),
    ("rolling", "len(orders_small.sort_values('order_date').set_index('order_date')['amount'].rolling(5).mean())"
                " == len(orders_small)", "True"),
    ("describe-frame", "orders_small[['amount', 'customer_id']].describe().shape", "(8, 2)"),
    ("numpy", "len(np.percentile(orders_small['amount'], [25, 50, 75]))", "3"),
    ("plot-in-memory", "fig, ax = plt.subplots()\norders_small.groupby('status')['amount'].sum().plot.bar(ax=ax)\n"
                       "buf = io.BytesIO()\nfig.savefig(buf, format='png')\nplt.close(fig)\nlen(buf.getvalue()) > 1000",
     "True"),
    ("to-csv-scratch", "orders_small.to_csv('scratch/orders_small.csv', index=False)", None),
    ("to-parquet-scratch", "orders_small.to_parquet('scratch/orders_small.parquet')", None),
    ("read-back-scratch", "pd.read_csv('scratch/orders_small.csv').shape == orders_small.shape", "True"),
    ("open-write-scratch", "with open('scratch/notes.txt', 'w') as f:\n    f.write('hello')", None),
    ("pathlib-json-scratch", "pathlib.Path('scratch/summary.json').write_text(json.dumps({'n': len(orders_small)})) > 0",
     "True"),
    ("json-dump-scratch", "with open('scratch/regions.json', 'w') as f:\n    json.dump(regions.to_dict('records'), f)",
     None),
    ("mkdir-and-write-scratch", "pathlib.Path('scratch/sub').mkdir(exist_ok=True)\n"
                                "orders_small.head().to_json('scratch/sub/head.json', date_format='iso')", None),
    ("delete-own-scratch-file", "os.remove('scratch/notes.txt')\npathlib.Path('scratch/summary.json').unlink()", None),
    ("create-temp-table", "con.execute('CREATE TEMP TABLE my_orders AS SELECT id, customer_id, amount FROM orders "
                          "WHERE amount > 300').fetchall()", None),
    ("dml-own-table", "con.execute('DELETE FROM my_orders WHERE amount > 490').fetchall()\n"
                      "con.execute('UPDATE my_orders SET amount = round(amount)').fetchall()\n"
                      "con.execute('INSERT INTO my_orders VALUES (-1, -1, 0)').fetchall()\n"
                      "con.sql('SELECT count(*) FROM my_orders WHERE id = -1').fetchall()[0][0]", "1"),
    ("temp-view", "con.execute('CREATE TEMP VIEW my_view AS SELECT customer_id, sum(amount) AS s FROM my_orders "
                  "GROUP BY 1').fetchall()\ncon.sql('SELECT count(*) > 0 FROM my_view').fetchall()[0][0]", "True"),
    ("drop-own-objects", "con.execute('DROP VIEW my_view').fetchall()\ncon.execute('DROP TABLE my_orders').fetchall()",
     None),
    ("in-memory-database", "mem = duckdb.connect()\nmem.execute('CREATE TABLE t AS SELECT range AS i FROM range(10)')"
                           ".fetchall()\nmem.sql('SELECT sum(i) FROM t').fetchall()[0][0]", "45"),
    ("relation-write-scratch", "con.sql('SELECT region, count(*) AS n FROM customers GROUP BY region')"
                               ".write_csv('scratch/regions_count.csv')", None),
    ("copy-to-scratch", "con.execute(\"COPY (SELECT status, count(*) AS n FROM orders GROUP BY status) "
                        "TO 'scratch/status.csv' (HEADER)\").fetchall()\nos.path.exists('scratch/status.csv')", "True"),
    ("database-in-scratch", "sc = duckdb.connect('scratch/work.duckdb')\n"
                            "sc.execute('CREATE TABLE t AS SELECT 1 AS a').fetchall()\n"
                            "sc.execute('INSERT INTO t VALUES (2)').fetchall()\n"
                            "n = sc.sql('SELECT count(*) FROM t').fetchall()[0][0]\nsc.close()\nn", "2"),
    ("time-magic", "%time n_orders = con.sql('SELECT count(*) FROM orders').fetchall()[0][0]", None),
    ("timeit-magic", "%timeit -n 3 -r 1 con.sql('SELECT 1').fetchall()", None),
    ("pwd-magic", "%pwd", None),
    ("who-magic", "%who", None),
]


@pytest.fixture(scope="module")
def k(kernel: GuardedKernel) -> GuardedKernel:
    return kernel


def test_there_are_enough_benign_cells() -> None:
    assert len(CELLS) >= 40


@pytest.mark.parametrize("code,expected", [c[1:] for c in CELLS], ids=[c[0] for c in CELLS])
def test_benign_cell(k: GuardedKernel, code: str, expected: str | None) -> None:
    mark = k.mark()
    res = k.run(code)
    assert res.ok, res
    assert res.stderr == "", f"benign cell wrote to stderr (a guard warning?):\n{res}"
    if expected is not None:
        assert res.text == expected, res
    bad = [r for r in k.since(mark) if r.get("decision") in ("deny", "warn", "would_deny", "truncate")]
    assert not bad, f"benign cell produced guard decisions: {bad}"


def test_scratch_outputs_exist(k: GuardedKernel, project: Workspace) -> None:
    names = {p.relative_to(project.scratch).as_posix() for p in project.scratch.rglob("*") if p.is_file()}
    assert {"orders_small.csv", "orders_small.parquet", "regions.json", "sub/head.json", "regions_count.csv",
            "status.csv", "work.duckdb"} <= names
    assert "notes.txt" not in names and "summary.json" not in names


def test_no_denial_or_warning_in_the_whole_session(k: GuardedKernel) -> None:
    bad = [r for r in k.records() if r.get("decision") in ("deny", "warn", "would_deny")]
    assert not bad
