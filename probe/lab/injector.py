"""An on-path DNS injector (scapy), run in the censor namespace:

    ip netns exec plab-censor python -m probe.lab.injector CONFIG.json

It watches queries crossing the censor towards a resolver abroad and, for a listed name, races a
forged answer (source address spoofed as the resolver) ahead of the real one. The real answer
still arrives: two answers to one query are the mark of injection.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any


def main(config: Path) -> None:
    from scapy.all import DNS, DNSQR, DNSRR, IP, UDP, AsyncSniffer, send  # slow import: here

    cfg: dict[str, Any] = json.loads(config.read_text())
    resolver, forge = cfg["resolver"], {k.lower(): v for k, v in cfg["forge"].items()}

    def wanted(pkt: Any) -> bool:
        return (IP in pkt and UDP in pkt and pkt[IP].dst == resolver and pkt[UDP].dport == 53
                and DNS in pkt and pkt[DNS].qr == 0 and DNSQR in pkt)

    def inject(pkt: Any) -> None:
        question = pkt[DNSQR]
        name = question.qname.decode().rstrip(".").lower()
        if name not in forge or question.qtype != 1:  # A queries only
            return
        answer = (IP(src=resolver, dst=pkt[IP].src)
                  / UDP(sport=53, dport=pkt[UDP].sport)
                  / DNS(id=pkt[DNS].id, qr=1, rd=1, ra=1, qd=question,
                        an=DNSRR(rrname=question.qname, type="A", ttl=300, rdata=forge[name])))
        send(answer, verbose=False)

    started = threading.Event()
    sniffer = AsyncSniffer(iface=cfg["iface"], lfilter=wanted, prn=inject, store=False,
                           started_callback=started.set)
    sniffer.start()
    if not started.wait(10):
        raise SystemExit("injector: sniffer did not start within 10 s")
    Path(cfg["ready"]).write_text("ready\n")
    sniffer.join()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
