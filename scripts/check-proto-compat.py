#!/usr/bin/env python3
"""Checks proto/*.proto (package littlehorse) against the descriptors that
LittleHorse's own Python SDK (PyPI: littlehorse-client) ships.

Every message, field and enum value we declare must exist there with the same
name, number, type, label and oneof; we may declare fewer fields than
LittleHorse (what we do not implement), never different ones. Every rpc of
our `service LittleHorse` must exist there with the same request and response
types and streaming.

Usage: check-proto-compat.py DESCRIPTOR_SET   (made by protoc
--include_imports --descriptor_set_out). Prints one line per problem and a
closing 'N passed, N failed' line.
"""
import importlib
import sys

from google.protobuf import descriptor_pb2, descriptor_pool

LH_MODULES = ["common_enums", "common_wfspec", "object_id", "type_definition",
              "variable", "wf_spec", "wf_run", "node_run", "task_run",
              "task_def", "external_event", "service"]


def lh_pool():
    for m in LH_MODULES:
        importlib.import_module("littlehorse.model.%s_pb2" % m)
    return descriptor_pool.Default()


def oneof_name(field_proto, msg_proto):
    if not field_proto.HasField("oneof_index"):
        return None
    return msg_proto.oneof_decl[field_proto.oneof_index].name


def main():
    fds = descriptor_pb2.FileDescriptorSet()
    with open(sys.argv[1], "rb") as f:
        fds.ParseFromString(f.read())
    pool = lh_pool()
    passed, problems = 0, []

    def check_enum(prefix, enum_proto):
        nonlocal passed
        full = prefix + "." + enum_proto.name
        try:
            theirs = pool.FindEnumTypeByName(full)
        except KeyError:
            problems.append("enum %s: not in LittleHorse" % full)
            return
        for v in enum_proto.value:
            tv = theirs.values_by_name.get(v.name)
            if tv is None:
                problems.append("enum %s: value %s not in LittleHorse" % (full, v.name))
            elif tv.number != v.number:
                problems.append("enum %s: %s = %d, LittleHorse has %d" % (full, v.name, v.number, tv.number))
            else:
                passed += 1

    def check_msg(prefix, msg_proto):
        nonlocal passed
        full = prefix + "." + msg_proto.name
        if msg_proto.options.map_entry:
            return
        try:
            theirs = pool.FindMessageTypeByName(full)
        except KeyError:
            problems.append("message %s: not in LittleHorse" % full)
            return
        their_proto = descriptor_pb2.DescriptorProto()
        theirs.CopyToProto(their_proto)
        their_fields = {f.name: f for f in their_proto.field}
        for f in msg_proto.field:
            tf = their_fields.get(f.name)
            where = "%s.%s" % (full, f.name)
            if tf is None:
                problems.append("field %s: not in LittleHorse" % where)
                continue
            diffs = []
            for attr in ("number", "type", "label", "type_name", "proto3_optional"):
                if getattr(f, attr) != getattr(tf, attr):
                    diffs.append("%s %r vs LittleHorse %r" % (attr, getattr(f, attr), getattr(tf, attr)))
            if oneof_name(f, msg_proto) != oneof_name(tf, their_proto):
                diffs.append("oneof %r vs LittleHorse %r" % (oneof_name(f, msg_proto), oneof_name(tf, their_proto)))
            if diffs:
                problems.append("field %s: %s" % (where, "; ".join(diffs)))
            else:
                passed += 1
        for nested in msg_proto.nested_type:
            check_msg(full, nested)
        for e in msg_proto.enum_type:
            check_enum(full, e)

    def check_service(service_proto):
        nonlocal passed
        full = "littlehorse." + service_proto.name
        try:
            theirs = pool.FindServiceByName(full)
        except KeyError:
            problems.append("service %s: not in LittleHorse" % full)
            return
        for m in service_proto.method:
            where = "%s.%s" % (full, m.name)
            tm = theirs.methods_by_name.get(m.name)
            if tm is None:
                problems.append("rpc %s: not in LittleHorse" % where)
                continue
            their_proto = descriptor_pb2.MethodDescriptorProto()
            tm.CopyToProto(their_proto)
            diffs = []
            for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
                if getattr(m, attr) != getattr(their_proto, attr):
                    diffs.append("%s %r vs LittleHorse %r" % (attr, getattr(m, attr), getattr(their_proto, attr)))
            if diffs:
                problems.append("rpc %s: %s" % (where, "; ".join(diffs)))
            else:
                passed += 1

    for fp in fds.file:
        if fp.package != "littlehorse":
            continue
        for m in fp.message_type:
            check_msg("littlehorse", m)
        for e in fp.enum_type:
            check_enum("littlehorse", e)
        for svc in fp.service:
            check_service(svc)

    for p in problems:
        print("MISMATCH " + p)
    print("proto-compat: %d passed, %d failed" % (passed, len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
