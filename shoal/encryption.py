"""BitTorrent protocol encryption (MSE/PE, as libtorrent implements it) as one setting.

- ``prefer`` (libtorrent's default): the handshake is obfuscated when the other side can,
  plaintext peers are still accepted and dialled.
- ``require``: only encrypted connections, in and out, the payload too (RC4): a peer that
  speaks plaintext only cannot connect. It hides what moves from a passive observer of
  the LAN; it does not authenticate peers (every chunk is verified either way).
- ``off``: plaintext only.
"""

from __future__ import annotations

from typing import Literal

import libtorrent as lt

Mode = Literal["prefer", "require", "off"]
MODES: tuple[Mode, ...] = ("prefer", "require", "off")


def lt_settings(mode: Mode) -> lt.settings_pack:
    """The libtorrent settings of ``mode``."""
    if mode == "require":
        policy, level, rc4 = lt.enc_policy.pe_forced, lt.enc_level.pe_rc4, True
    elif mode == "off":
        policy, level, rc4 = lt.enc_policy.pe_disabled, lt.enc_level.pe_plaintext, False
    else:
        policy, level, rc4 = lt.enc_policy.pe_enabled, lt.enc_level.pe_both, False
    return {
        "out_enc_policy": int(policy),
        "in_enc_policy": int(policy),
        "allowed_enc_level": int(level),
        "prefer_rc4": rc4,
    }
