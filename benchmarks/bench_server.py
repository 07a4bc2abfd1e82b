"""The server extension's cost per forwarded execute_request (jupyter_ext.channels).

"Guarded" is what the extension adds in front of the kernel websocket's forwarding: the v1
message decoded, ``metadata.guard_actor`` stamped and re-encoded, and the ``server.execute``
record written to the server chain (hash chain, redaction, one ``pwrite``).  "Plain" is the
same decode / re-encode without the record: what any message-rewriting proxy pays.  The ratio
shows the record's share; the figure is the guarded cost per request in microseconds (a cell
round trip through a kernel is milliseconds).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from types import SimpleNamespace
from typing import Any

from .harness import Config, Result, Stats, alternate, at_most, silenced_gc

GROUP = "server"
CODE = "import duckdb\ncon = duckdb.connect('data/warehouse.duckdb', read_only=True)\ncon.sql('SELECT 1').df()\n"


def run(cfg: Config) -> list[Result]:
    from jupyter_server.services.kernels.connection.base import (
        deserialize_msg_from_ws_v1,
        serialize_msg_to_ws_v1,
    )

    from guard_kernel.policy.load import builtin_policy
    from jupyter_ext.channels import V1, ChannelGuard, rewrite
    from jupyter_ext.kernels import StartedKernel
    from jupyter_ext.server_audit import ServerAudit

    work = os.path.join(cfg.workdir, "server-bench")
    os.makedirs(work, exist_ok=True)
    audit = ServerAudit(builtin_policy(work), work)

    class Kernels:
        def kernel(self, kid: str) -> StartedKernel:
            return StartedKernel("guarded", "python3", "agent")

    guard = ChannelGuard(audit, Kernels(), frozenset({"claude"}))  # type: ignore[arg-type]
    handler = SimpleNamespace(current_user=SimpleNamespace(username="claude", display_name="claude"),
                              request=SimpleNamespace(remote_ip="127.0.0.1", headers={"User-Agent": "bench"}))
    conn = SimpleNamespace(subprotocol=V1, websocket_handler=handler, kernel_id="k-bench")
    msg: dict[str, Any] = {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": "s",
                                      "username": "u"},
                           "parent_header": {}, "metadata": {"guard_actor": "human"}, "content": {"code": CODE}}
    wire = serialize_msg_to_ws_v1(msg, "shell", lambda x: json.dumps(x).encode())
    n = 2_000 if cfg.quick else 10_000

    def guarded() -> float:
        with silenced_gc():
            t0 = time.perf_counter()
            for _ in range(n):
                rewrite(guard, conn, wire)
            return (time.perf_counter() - t0) / n

    def plain() -> float:
        with silenced_gc():
            t0 = time.perf_counter()
            for _ in range(n):
                channel, parts = deserialize_msg_from_ws_v1(wire)
                json.loads(parts[0])
                meta = json.loads(parts[2])
                json.loads(parts[3])
                meta["guard_actor"] = "agent"
                parts[2] = json.dumps(meta).encode()
                serialize_msg_to_ws_v1(parts, channel)
            return (time.perf_counter() - t0) / n

    s = alternate({"guarded": guarded, "plain": plain}, cfg.rounds)
    audit.close()
    g, p = Stats.of(s["guarded"]), Stats.of(s["plain"])
    return [Result(GROUP, f"execute_request stamped + recorded ({n:,} per round)", "s", g, p, g.median * 1e6,
                   "per request", "µs", at_most(500, "≤ 500 µs"),
                   note=f"plain = decode/stamp/re-encode without the record; guarded/plain {g.median / p.median:.1f}")]
