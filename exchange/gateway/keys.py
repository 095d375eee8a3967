"""The gateway key: the secret under which authorization codes are digested (HMAC-SHA256).

It lives outside the metadata store (``$EXCHANGE_GATEWAY_KEY_FILE``, by default
``$EXCHANGE_HOME/gateway.key``), so that a copy of the store alone cannot test a guessed code.
32 random bytes, made 0600 on first use by whichever process gets there first (every gateway
process and the CLI then read the same file), and refused when group or others may read or
write it. A key file that disappears after codes were issued is refused, not made anew: a new
key would silently turn every issued code into an unknown one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy as sa

from exchange.gateway.models import ApiCode
from exchange.kernel.errors import BadInput
from exchange.kernel.modes import publish_once, read_private
from exchange.kernel.settings import Settings
from exchange.store import Store

KEY_FILE = "gateway.key"
KEY_FILE_ENV = "EXCHANGE_GATEWAY_KEY_FILE"
KEY_BYTES = 32


def key_path(settings: Settings) -> Path:
    """Where the key is: ``$EXCHANGE_GATEWAY_KEY_FILE`` or ``$EXCHANGE_HOME/gateway.key``."""
    given = os.environ.get(KEY_FILE_ENV)
    return Path(given).expanduser().resolve() if given else settings.home / KEY_FILE


def gateway_key(settings: Settings, store: Store | None = None) -> bytes:
    """The gateway key, made on first use. With ``store`` given, a missing key file is refused
    when the store already holds codes (they were digested under the lost key)."""
    path = key_path(settings)
    if not path.exists():
        if store is not None and _codes_issued(store):
            raise BadInput(
                f"the gateway key {path} is missing but authorization codes were issued under "
                "it: restore the file from a backup (every gateway process and the CLI share "
                "it); a new key would make every issued code unknown"
            )
        publish_once(path, secrets.token_bytes(KEY_BYTES))  # made once: the first wins
    return _read_key(path)


def _codes_issued(store: Store) -> bool:
    with store.session() as s:
        return s.execute(sa.select(ApiCode.id).limit(1)).first() is not None


def _read_key(path: Path) -> bytes:
    secret = read_private(path, "the gateway key", "gateway user")
    if len(secret) != KEY_BYTES:
        raise BadInput(
            f"the gateway key {path} holds {len(secret)} bytes, not {KEY_BYTES}: restore it "
            "from a backup"
        )
    return secret
