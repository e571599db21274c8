"""Applications that sit behind a FIX acceptor session."""
from __future__ import annotations

from gateway.fix_session import BusinessReject, FixSession, encode_body

BUSINESS_REJECT_UNSUPPORTED_MESSAGE_TYPE = 3


def sorted_body_fields(body: bytes) -> list[tuple[int, bytes]]:
    """Body fields in ascending tag order, as QuickFIX serialises a body it rebuilt."""
    fields = []
    for part in body.split(b"\x01"):
        if part:
            tag, _, value = part.partition(b"=")
            fields.append((int(tag), value))
    fields.sort(key=lambda field: field[0])
    return fields


class EchoApplication:
    """The reflector QuickFIX's acceptance tests assume (../shared/fix-at/README.md).

    NewOrderSingle (D) and SecurityDefinition (d) are sent back with the same body under
    our header, body tags in ascending order as QuickFIX serialises them; a D with
    PossResend=Y whose ClOrdID was already seen since logon is dropped; any other
    application message gets BusinessMessageReject 380=3.
    """

    ECHOED = (b"D", b"d")

    def __init__(self) -> None:
        self.seen_cl_ord_ids: set[bytes] = set()
        self.echoed = 0

    def on_logon(self, session: FixSession) -> None:
        pass

    def on_logout(self, session: FixSession) -> None:
        self.seen_cl_ord_ids.clear()

    def on_app_message(self, session: FixSession, msg) -> None:
        msg_type = msg.msg_type
        if msg_type not in self.ECHOED:
            raise BusinessReject(BUSINESS_REJECT_UNSUPPORTED_MESSAGE_TYPE, "Unsupported Message Type")
        if msg_type == b"D":
            cl_ord_id = msg.get(11)
            if msg.get(97) == b"Y" and cl_ord_id in self.seen_cl_ord_ids:
                return
            self.seen_cl_ord_ids.add(cl_ord_id)
        session.send_app(msg_type, encode_body(sorted_body_fields(msg.body())))
        self.echoed += 1
