#!/usr/bin/env python3
"""Writes Sources/LHServer/GRPC/UnsupportedFields.swift: for every message of
proto/ (package littlehorse), the fields LittleHorse's model has and ours does
not, by number, so that the gRPC front names a refused field ("struct_def_id")
instead of giving only its number. Run by hand after editing proto/ (needs the
virtualenv of scripts/python-sdk.sh and protoc); the output is committed.
"""
import importlib
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool

LH_MODULES = ["common_enums", "common_wfspec", "object_id", "type_definition", "variable", "wf_spec",
              "wf_run", "node_run", "task_run", "task_def", "external_event", "service"]


def main():
    for m in LH_MODULES:
        importlib.import_module("littlehorse.model.%s_pb2" % m)
    pool = descriptor_pool.Default()
    with tempfile.NamedTemporaryFile(suffix=".pb") as out:
        subprocess.check_call(["protoc", "--include_imports", "--descriptor_set_out=" + out.name, "-I", "proto"]
                              + ["proto/%s.proto" % m for m in LH_MODULES])
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(open(out.name, "rb").read())
    rows = []

    def walk(prefix, msg):
        full = prefix + "." + msg.name
        if msg.options.map_entry:
            return
        ours = {f.number for f in msg.field}
        try:
            theirs = pool.FindMessageTypeByName(full)
        except KeyError:
            return
        for f in theirs.fields:
            if f.number not in ours:
                rows.append((full, f.number, f.name))
        for nested in msg.nested_type:
            walk(full, nested)

    for fp in fds.file:
        if fp.package == "littlehorse":
            for m in fp.message_type:
                walk("littlehorse", m)
    lines = [
        "// Made by scripts/make-unsupported-fields.py from LittleHorse's descriptors",
        "// (PyPI littlehorse-client) and proto/; do not edit.",
        "",
        "/// Fields of LittleHorse's model that this server does not implement, by",
        "/// message and number: the names the gRPC front gives a refused field.",
        "enum UnsupportedFields {",
        "    static let names: [String: [Int: String]] = [",
    ]
    by_msg = {}
    for full, number, name in rows:
        by_msg.setdefault(full, []).append((number, name))
    for full in sorted(by_msg):
        entries = ", ".join('%d: "%s"' % (n, name) for n, name in sorted(by_msg[full]))
        lines.append('        "%s": [%s],' % (full, entries))
    lines += ["    ]", "}", ""]
    open("Sources/LHServer/GRPC/UnsupportedFields.swift", "w").write("\n".join(lines))
    print("%d fields of %d messages" % (len(rows), len(by_msg)))


if __name__ == "__main__":
    sys.exit(main())
