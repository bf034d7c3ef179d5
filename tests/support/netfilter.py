"""Drop a loopback port's packets in the kernel, as a network partition does.

A proxy in user space cannot fake a partition: its kernel still acknowledges every byte and
every keepalive probe, so a client never notices. Dropping the packets with nftables can:
the client's data goes unacknowledged, its keepalives unanswered, and only its own timeouts
(`tcp_user_timeout`, keepalives, `connect_timeout`) end the wait. Each `Blackhole` is a table
of its own that names one port of the caller's own (never a shared service's), removed on
`restore()`; it needs root and the `nft` command (package nftables).
"""

from __future__ import annotations

import shutil
import subprocess

TABLE_PREFIX = "assessments_blackhole_"


def available() -> bool:
    return shutil.which("nft") is not None


class Blackhole:
    def __init__(self, port: int) -> None:
        self.port = port
        self.table = f"{TABLE_PREFIX}{port}"
        self.active = False

    def drop(self) -> None:
        """From now on, every packet to or from the port on loopback is dropped."""
        _nft(
            f"""
            table inet {self.table} {{
                chain input {{
                    type filter hook input priority -100; policy accept;
                    iif lo tcp dport {self.port} drop
                    iif lo tcp sport {self.port} drop
                }}
            }}
            """
        )
        self.active = True

    def restore(self) -> None:
        if self.active:
            _nft(f"delete table inet {self.table}")
            self.active = False


def _nft(script: str) -> None:
    if not available():
        raise RuntimeError("the nft command is missing: apt-get install nftables")
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)
