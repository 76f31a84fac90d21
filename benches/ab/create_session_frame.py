#!/usr/bin/env python3
"""Writes the loadgen's 15-contact CreateSessionRequest (examples/loadgen/scenario.rs, create_request)
as one gRPC frame (flag byte, 4-byte big-endian length, protobuf), for h2load -d."""
import struct, sys

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F; n >>= 7
        if n: out.append(b | 0x80)
        else: out.append(b); return bytes(out)

def key(field, wire): return varint(field << 3 | wire)
def s(field, text): b = text.encode(); return key(field, 2) + varint(len(b)) + b
def msg(field, body): return key(field, 2) + varint(len(body)) + body
def i(field, n): return key(field, 0) + varint(n)

script_id, contacts, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# Optional: CreateSessionRequest.purpose (1 advertising, 2 service), for the calling policy's figures.
purpose = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else 0
body = s(1, script_id)
for n in range(contacts):
    c = s(1, f"09123{n:05}") + s(2, f"hoc.sinh{n}@truong.edu.vn") + s(3, f"HS-{n:06}")
    for k, v in sorted({"uB131frQEU": f"{n % 10}.5", "ho_ten": f"Nguyễn Văn Đức {n}", "lop": "12A1"}.items()):
        c += msg(4, s(1, k) + s(2, v))
    body += msg(2, c)
body += s(3, "Thông báo điểm thi học kỳ I") + s(4, "19001234") + i(5, 2) + i(6, 1) + i(7, 2) + i(8, 10)
body += msg(9, i(1, 60)) + msg(10, i(1, 300))
if purpose:
    body += i(15, purpose)
open(out, "wb").write(b"\0" + struct.pack(">I", len(body)) + body)
print(len(body) + 5, "bytes")
