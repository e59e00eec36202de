"""A real authoritative DNS server for tests: UDP on a free loopback port, in a thread of
its own, answering TXT queries from a dict that a test may change at any time.

    with DnsServer({"_dmarc.example.org": ["v=DMARC1; p=none"]}) as server:
        ...  # ask 127.0.0.1:server.port

A name it does not hold is NXDOMAIN; another query type at a name it holds is an empty
answer. A record longer than 255 characters is sent as several strings, as a DNS host
publishes a 2048-bit DKIM key, so the client must join them.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HOST = "127.0.0.1"
#: The most one character-string of a TXT record holds (RFC 1035, 3.3).
STRING_MAX = 255


class DnsServer:
    def __init__(self, txt: dict[str, list[str]] | None = None) -> None:
        self.txt = dict(txt or {})
        self.questions: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((HOST, 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue
            self._socket.sendto(self._answer(query).to_wire(), client)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            self.questions.append(name)
            if name not in self.txt:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT and self.txt[name]:
                texts = [_quoted_strings(record) for record in self.txt[name]]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, "TXT", texts)
                )
        return response


def _quoted_strings(record: str) -> str:
    """A TXT record in zone-file form: its text cut into quoted strings of at most 255."""
    parts = [record[i : i + STRING_MAX] for i in range(0, len(record), STRING_MAX)] or [""]
    return " ".join('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"' for part in parts)
