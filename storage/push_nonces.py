"""Plain-mode push nonces, so that a captured signature signs one body only.

In plain mode WeChat's `signature` covers the token, timestamp and nonce, not the body: whoever
sees one push URL could send any body under it while the timestamp is fresh. Each
(timestamp, nonce) is remembered with a digest of its body, in the database so every worker
shares it. The same body again is a retry; another body is a forgery.

This runs on every plain push, so it runs on the driver's cursor (storage.sql.RawStatement).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy.orm import Session

from storage.sql import RawStatement, to_db

_REMEMBER = RawStatement(
    "INSERT INTO push_nonce (timestamp, nonce, body_sha256, seen_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (timestamp, nonce) DO NOTHING RETURNING 1"
)
_SEEN = RawStatement("SELECT body_sha256 FROM push_nonce WHERE timestamp = ? AND nonce = ?")
_PRUNE = RawStatement("DELETE FROM push_nonce WHERE seen_at < ?")


def remember(session: Session, *, timestamp: str, nonce: str, body: bytes, now: datetime,
             prune_before: datetime | None = None) -> bool:
    """Record a push's (timestamp, nonce); False when they came before with another body.

    Insert and compare are one transaction; on PostgreSQL a concurrent insert of the same pair
    waits for ours, then compares. `prune_before` also forgets pairs seen before that time.
    """
    if prune_before is not None:
        _PRUNE.execute(session, (to_db(session, prune_before),))
    digest = hashlib.sha256(body).hexdigest()
    if _REMEMBER.execute(session, (timestamp, nonce, digest, to_db(session, now))).fetchone():
        return True
    row = _SEEN.execute(session, (timestamp, nonce)).fetchone()
    # No row after a conflict cannot happen within the window; refusing is the safe answer.
    return row is not None and hmac.compare_digest(str(row[0]), digest)
