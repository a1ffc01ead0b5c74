#!/usr/bin/env python3
"""Checks proto/runtime/v1/api.proto against the CRI descriptor in a kubelet.

A kubelet (Go, google.golang.org/protobuf) embeds the serialized
FileDescriptorProto of cri-api's runtime/v1 api.proto, named
"staging/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto". This script
extracts it, compiles our api.proto with protoc under that same name, and
compares the two byte for byte.

protoc older than 22 (Debian bookworm has 3.21) does not know the
`debug_redact` field option; with such a protoc the option is stripped from
both sides first and the fields carrying it are listed.

Usage: check-kubelet-descriptor.py KUBELET [API_PROTO] [--protoc PROTOC]
       [--dump OUT.pb]   (writes the kubelet's raw FileDescriptorProto)
Exit status 0 when identical.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

NAME = "staging/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "proto", "runtime", "v1", "api.proto")
REDACT = " [debug_redact = true]"


def varint(buf, i):
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, i


def enc_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(buf):
    """(field number, wire type, raw bytes of the whole field, payload)."""
    i = 0
    while i < len(buf):
        start = i
        tag, i = varint(buf, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            _, i = varint(buf, i)
            payload = None
        elif wt == 2:
            n, i = varint(buf, i)
            payload = buf[i:i + n]
            i += n
        elif wt == 1:
            i += 8
            payload = None
        elif wt == 5:
            i += 4
            payload = None
        else:
            raise ValueError("unexpected wire type %d" % wt)
        yield num, wt, buf[start:i], payload


def ld(num, payload):
    return enc_varint(num << 3 | 2) + enc_varint(len(payload)) + payload


def extract(kubelet):
    data = open(kubelet, "rb").read()
    head = b"\x0a" + enc_varint(len(NAME)) + NAME.encode() + b"\x12\x0aruntime.v1"
    start = data.find(head)
    if start < 0:
        sys.exit("no runtime.v1 descriptor named %s in %s" % (NAME, kubelet))
    # Walk top-level FileDescriptorProto fields until something that is not one.
    i = start
    known = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15}
    while i < len(data):
        tag, j = varint(data, i)
        if tag >> 3 not in known or tag & 7 not in (0, 2):
            break
        if tag & 7 == 2:
            n, j = varint(data, j)
            j += n
        else:
            _, j = varint(data, j)
        i = j
    return data[start:i]


def strip_redact(fdp):
    """Drops FieldOptions.debug_redact (16) everywhere; returns (bytes, names)."""
    hits = []

    def field_opts(buf):
        return b"".join(raw for num, _, raw, _ in fields(buf) if num != 16)

    def field_desc(buf, msg):
        out = b""
        name = ""
        for num, wt, raw, payload in fields(buf):
            if num == 1 and wt == 2:
                name = payload.decode()
            if num == 8 and wt == 2:
                new = field_opts(payload)
                if new != payload:
                    hits.append(msg + "." + name)
                out += ld(8, new) if new else b""
            else:
                out += raw
        return out

    def message(buf, prefix):
        out = b""
        name = ""
        for num, wt, raw, payload in fields(buf):
            if num == 1 and wt == 2:
                name = prefix + payload.decode()
        for num, wt, raw, payload in fields(buf):
            if num == 2 and wt == 2:
                out += ld(2, field_desc(payload, name))
            elif num == 3 and wt == 2:
                out += ld(3, message(payload, name + "."))
            else:
                out += raw
        return out

    out = b""
    for num, wt, raw, payload in fields(fdp):
        out += ld(4, message(payload, "")) if num == 4 and wt == 2 else raw
    return out, hits


def compile_proto(protoc, proto, strip):
    tmp = tempfile.mkdtemp()
    try:
        dst = os.path.join(tmp, NAME)
        os.makedirs(os.path.dirname(dst))
        text = open(proto).read()
        open(dst, "w").write(text.replace(REDACT, "") if strip else text)
        out = os.path.join(tmp, "set.pb")
        r = subprocess.run([protoc, "-I" + tmp, "-o", out, NAME],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None, r.stderr
        fds = open(out, "rb").read()
        files = [p for num, _, _, p in fields(fds) if num == 1]
        return files[0], ""
    finally:
        shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kubelet")
    ap.add_argument("proto", nargs="?", default=DEFAULT_PROTO)
    ap.add_argument("--protoc", default=os.environ.get("PROTOC", "protoc"))
    ap.add_argument("--dump")
    a = ap.parse_args()

    kube = extract(a.kubelet)
    print("kubelet descriptor: %d bytes" % len(kube))
    if a.dump:
        open(a.dump, "wb").write(kube)

    ours, err = compile_proto(a.protoc, a.proto, strip=False)
    if ours is not None:
        same = ours == kube
        print("compiled verbatim: %d bytes, %s" % (len(ours), "IDENTICAL" if same else "DIFFERENT"))
        return 0 if same else 1
    if "debug_redact" not in err:
        sys.exit(err)
    print("protoc does not know debug_redact; comparing without it")
    ours, err = compile_proto(a.protoc, a.proto, strip=True)
    if ours is None:
        sys.exit(err)
    kube_s, kube_hits = strip_redact(kube)
    print("debug_redact in kubelet on: %s" % ", ".join(kube_hits))
    print("debug_redact in %s on %d field(s)" % (a.proto, open(a.proto).read().count(REDACT)))
    same = ours == kube_s and len(kube_hits) == open(a.proto).read().count(REDACT)
    print("compiled without debug_redact: %d bytes, %s" % (len(ours), "IDENTICAL" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
