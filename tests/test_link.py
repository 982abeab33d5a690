"""The host link's framing, from the layouts in rmsmp.rtl.bridge (the bridge's own behaviour
is tested on the board top in Verilator: tests/rtl/test_board_verilator.py)."""
import random
import struct

from rmsmp.host.link import RESPONSE_BYTES, crc16, encode_request
from rmsmp.rtl.bridge import LINK_CRC, REQUEST_BYTES, SYNC_REQ, Cmd, RequestHeader, ResponseHeader


def test_the_host_crc_is_the_bridges_crc():
    rnd = random.Random(0)
    for n in (0, 1, 9, 100):
        data = bytes(rnd.randrange(256) for _ in range(n))
        assert crc16(data) == LINK_CRC.compute(data)
    assert crc16(b"123456789") == 0x29B1                 # the catalogue's check value


def test_a_request_frame_is_sync_header_payload_crc():
    frame = encode_request(Cmd.MEM_WRITE, 0x1234, 0xDEADBEEF, 2, [7, 0x01020304])
    assert frame[0] == SYNC_REQ and len(frame) == 1 + REQUEST_BYTES + 8 + 2
    head = RequestHeader.from_bits(int.from_bytes(frame[1:1 + REQUEST_BYTES], "little"))
    assert (int(head.cmd), int(head.seq), int(head.addr), int(head.len)) == (Cmd.MEM_WRITE, 0x34, 0xDEADBEEF, 2)
    assert struct.unpack("<II", frame[1 + REQUEST_BYTES:-2]) == (7, 0x01020304)
    assert LINK_CRC.compute(frame[1:]) == LINK_CRC.residue() == 0        # the CRC closes the frame
    assert REQUEST_BYTES == 8 and RESPONSE_BYTES == 4
    assert ResponseHeader.as_shape().size == 32
