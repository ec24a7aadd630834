"""hl7/ack.py: swapped sender/receiver, MSA-2 = MSH-10, ERR with an escaped reason; read by python-hl7."""

from __future__ import annotations

import datetime as dt

import pytest

import hl7 as python_hl7
from ccm_connector.hl7 import ack, reader

NOW = dt.datetime(2026, 11, 3, 16, 30, tzinfo=dt.UTC)
INBOUND = b"MSH|^~\\&|EHRAPP|NORTHCLINIC|CCMAPP|PRACTICE|20261103103000-0600||MDM^T02^MDM_T02|CTL^0001|P|2.5.1\rPID|1"


def test_an_accept_swaps_sender_and_receiver_and_echoes_msh10() -> None:
    header = reader.read_message(INBOUND).header
    raw = ack.build_ack(header, ack.ACCEPT, control_id="A1", now=NOW)
    msg = python_hl7.parse(raw.decode())
    msh = msg.segment("MSH")
    assert [str(msh[n]) for n in (3, 4, 5, 6)] == ["CCMAPP", "PRACTICE", "EHRAPP", "NORTHCLINIC"]
    assert str(msh[7]) == "20261103163000+0000"
    assert (
        str(msh[9]) == "ACK^T02^ACK"
        and str(msh[10]) == "A1"
        and str(msh[11]) == "P"
        and str(msh[12]) == "2.5.1"
    )
    assert str(msg.segment("MSA")[1]) == "AA"
    assert str(msg.segment("MSA")[2]) == "CTL^0001"  # exactly as written in MSH-10
    assert "ERR" not in [str(s[0]) for s in msg]
    assert raw.endswith(b"\r")


def test_an_error_carries_the_reason_escaped_in_msa3_and_err() -> None:
    header = reader.read_message(INBOUND).header
    reason = "PID-7: not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]) | ^ & ~ \\"
    raw = ack.build_ack(header, ack.ERROR, control_id="A2", now=NOW, reason=reason, error_code=102)
    parsed = ack.read_ack(raw)
    assert parsed == ack.Ack("AE", "CTL^0001", reason)
    msg = reader.read_message(raw)
    err = msg.first("ERR")
    assert err.get(2) == "PID" and err.get(2, 3) == "7"  # ERR-2 error location
    assert err.get(3) == "102" and err.get(3, 2) == "Data type error" and err.get(4) == "E"
    assert err.get(1, 4, 1) == "102"  # ERR-1 for v2.3/2.4 readers
    assert err.get(8) == reason


def test_an_ack_keeps_the_inbound_delimiters_and_character_set() -> None:
    data = "MSH*:%\\!*EHR*F*CCM*P*20260101**ADT:A04*X:9*T*2.3******8859/1\rPID*1".encode("latin-1")
    header = reader.read_message(data).header
    raw = ack.build_ack(header, ack.REJECT, control_id="A3", now=NOW, reason="a*b:c")
    assert raw.startswith(b"MSH*:%\\!*CCM*P*EHR*F*")
    parsed = ack.read_ack(raw)
    assert (parsed.code, parsed.control_id, parsed.text) == ("AR", "X:9", "a*b:c")
    assert b"*8859/1" in raw.split(b"\r")[0]


def test_an_ack_for_unreadable_bytes_has_no_msa2_and_our_application() -> None:
    raw = ack.build_ack(
        None,
        ack.REJECT,
        control_id="A4",
        now=NOW,
        application="CCMCONNECTOR",
        reason="no MSH segment: not an HL7 message",
    )
    msg = python_hl7.parse(raw.decode())
    assert str(msg.segment("MSH")[3]) == "CCMCONNECTOR"
    assert str(msg.segment("MSA")[1]) == "AR" and str(msg.segment("MSA")[2]) == ""


def test_unusable_inbound_delimiters_fall_back_to_the_standard_ones() -> None:
    header = reader.peek_header(b"MSH|^^\\&|EHR|F|CCM|P|2026||ADT^A01|CTL-1|P|2.5")
    assert header is not None
    raw = ack.build_ack(
        header,
        ack.REJECT,
        control_id="A5",
        now=NOW,
        reason="MSH-2: two delimiters are the same character",
    )
    parsed = ack.read_ack(raw)
    assert parsed.code == "AR" and parsed.control_id == "CTL-1"
    assert raw.startswith(b"MSH|^~\\&|")


def test_unknown_codes_are_refused() -> None:
    with pytest.raises(ValueError):
        ack.build_ack(None, "OK", control_id="A6", now=NOW)
