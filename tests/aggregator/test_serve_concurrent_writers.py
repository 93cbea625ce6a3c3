"""Several `fedqi-aggregator serve` processes, each with several workers, writing one log at once
(issue 17: more API workers behind the proxy must keep the log's guarantees). Real processes on
loopback, real signatures, 16 concurrent clients whose submissions alternate between the two
servers; then the log must have no gap and no duplicate, every receipt must verify against a
signed checkpoint, every checkpoint seen must be consistent with the final one, and
`log verify` must pass."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
from agg_helpers import enrolled, serve_on_a_free_port
from verify import log_key, verify_receipt

from aggregator.cli import main as cli
from protocol.checkpoint import verify_checkpoint
from protocol.merkle import verify_consistency
from protocol.submission import Period

PRACTICES = 16  # one client thread each, so each practice's months go in order
MONTHS = 6


def _serve(network, workers: int) -> tuple[subprocess.Popen[bytes], str]:  # type: ignore[no-untyped-def]
    proc, port = serve_on_a_free_port(network, "--workers", str(workers))
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


def test_two_servers_with_two_workers_each_keep_one_log(network) -> None:  # type: ignore[no-untyped-def]
    agents = [enrolled(network, f"A8{1000 + i}") for i in range(PRACTICES)]
    enrolments = PRACTICES
    bodies = {
        a.ods: [a.submission(period=Period.month(2026, m)) for m in range(1, MONTHS + 1)]
        for a in agents
    }
    servers = [_serve(network, workers=2), _serve(network, workers=2)]
    try:
        urls = [url for _, url in servers]

        def send(ods: str) -> list[tuple[bytes, bytes]]:
            out = []
            with httpx.Client(timeout=60) as client:
                for m, body in enumerate(bodies[ods]):
                    url = urls[(m + int(ods[-1])) % 2]  # alternate servers, staggered
                    r = client.post(
                        f"{url}/v1/submissions",
                        content=body,
                        headers={"Content-Type": "application/jose+json"},
                    )
                    assert r.status_code in (200, 201), (ods, m, r.status_code, r.text[:300])
                    out.append((body, r.content))
            return out

        with ThreadPoolExecutor(PRACTICES) as pool:
            answers = [x for chunk in pool.map(send, list(bodies)) for x in chunk]
        assert len(answers) == PRACTICES * MONTHS

        with httpx.Client(base_url=urls[0], timeout=60) as client:
            name, key = log_key(client)
            final = verify_checkpoint(client.get("/v1/log/checkpoint").text, name, key)
            size = enrolments + PRACTICES * MONTHS
            assert final.size == size  # every submission appended once, nothing else

            # every receipt: signed, its checkpoint signed, its leaf included under that root
            receipts = [verify_receipt(client, receipt, body) for body, receipt in answers]
            indexes = [r.leaf_index for r in receipts]
            assert len(set(indexes)) == len(indexes), "two submissions share a leaf"
            assert all(enrolments <= i < size for i in indexes)
            assert sorted(indexes) == list(range(enrolments, size))  # no gap, no duplicate

            # the log's leaves are exactly the enrolments and the submissions, once each
            admin = network.user("admin")
            leaves = client.get(
                "/v1/log/entries",
                params={"start": 0, "end": size},
                headers={"Authorization": f"Bearer {admin}"},
            ).json()
            assert [leaf["index"] for leaf in leaves] == list(range(size))
            sent = {hashlib.sha256(body).hexdigest() for body, _ in answers}
            logged = [
                json.loads(base64.b64decode(leaf["leaf_data"])).get("envelope_sha256")
                for leaf in leaves
            ]
            assert sorted(h for h in logged if h in sent) == sorted(sent)

            # every checkpoint a receipt carried is a prefix of the final tree
            for old in sorted({r.tree_size for r in receipts}):
                old_cp = verify_checkpoint(client.get(f"/v1/log/checkpoint/{old}").text, name, key)
                proof = client.get("/v1/log/proof/consistency", params={"old": old, "new": size})
                verify_consistency(
                    old,
                    size,
                    old_cp.root,
                    final.root,
                    [bytes.fromhex(h) for h in proof.json()["proof"]],
                )
    finally:
        for proc, _ in servers:
            _stop(proc)
    assert cli(["log", "verify", "--db", network.db]) == 0
