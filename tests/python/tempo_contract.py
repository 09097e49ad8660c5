#!/usr/bin/env python3
"""Decode Ringtail's search and tag responses with Tempo's public messages.

Tempo's ``tempo.proto`` (package ``tempopb``) defines what its HTTP API answers:
``SearchResponse``, ``SearchTagsResponse``, ``SearchTagsV2Response``,
``SearchTagValuesResponse`` and ``SearchTagValuesV2Response``. Grafana's Go client
decodes them with the protobuf JSON mapping. This script builds those messages (field
names, types and numbers as in tempo.proto; attributes are OpenTelemetry's
``common.v1.KeyValue``) and parses each response with ``json_format.Parse`` with unknown
fields rejected: a misspelt field, a wrong type or an extra field fails.

Usage: tempo_contract.py BASE_URL TENANT MESSAGE PATH [MESSAGE PATH ...]
Exit 0 when every response decodes; 1 otherwise.
"""

from __future__ import annotations

import sys
import urllib.request

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from opentelemetry.proto.common.v1 import common_pb2

F = descriptor_pb2.FieldDescriptorProto
REPEATED, OPTIONAL = F.LABEL_REPEATED, F.LABEL_OPTIONAL

# name -> [(field, number, type, label, type_name)], as in tempo.proto.
MESSAGES = {
    "SearchResponse": [
        ("traces", 1, F.TYPE_MESSAGE, REPEATED, ".tempopb.TraceSearchMetadata"),
        ("metrics", 2, F.TYPE_MESSAGE, OPTIONAL, ".tempopb.SearchMetrics"),
    ],
    "TraceSearchMetadata": [
        ("traceID", 1, F.TYPE_STRING, OPTIONAL, None),
        ("rootServiceName", 2, F.TYPE_STRING, OPTIONAL, None),
        ("rootTraceName", 3, F.TYPE_STRING, OPTIONAL, None),
        ("startTimeUnixNano", 4, F.TYPE_UINT64, OPTIONAL, None),
        ("durationMs", 5, F.TYPE_UINT32, OPTIONAL, None),
        ("spanSet", 6, F.TYPE_MESSAGE, OPTIONAL, ".tempopb.SpanSet"),
        ("spanSets", 7, F.TYPE_MESSAGE, REPEATED, ".tempopb.SpanSet"),
        ("serviceStats", 8, F.TYPE_MESSAGE, REPEATED,
         ".tempopb.TraceSearchMetadata.ServiceStatsEntry"),
    ],
    "ServiceStats": [
        ("spanCount", 1, F.TYPE_UINT32, OPTIONAL, None),
        ("errorCount", 2, F.TYPE_UINT32, OPTIONAL, None),
    ],
    "SpanSet": [
        ("spans", 1, F.TYPE_MESSAGE, REPEATED, ".tempopb.Span"),
        ("matched", 2, F.TYPE_UINT32, OPTIONAL, None),
        ("attributes", 3, F.TYPE_MESSAGE, REPEATED, ".opentelemetry.proto.common.v1.KeyValue"),
    ],
    "Span": [
        ("spanID", 1, F.TYPE_STRING, OPTIONAL, None),
        ("name", 2, F.TYPE_STRING, OPTIONAL, None),
        ("startTimeUnixNano", 3, F.TYPE_UINT64, OPTIONAL, None),
        ("durationNanos", 4, F.TYPE_UINT64, OPTIONAL, None),
        ("attributes", 5, F.TYPE_MESSAGE, REPEATED, ".opentelemetry.proto.common.v1.KeyValue"),
    ],
    "SearchMetrics": [
        ("inspectedTraces", 1, F.TYPE_UINT32, OPTIONAL, None),
        ("inspectedBytes", 2, F.TYPE_UINT64, OPTIONAL, None),
        ("totalBlocks", 3, F.TYPE_UINT32, OPTIONAL, None),
        ("completedJobs", 4, F.TYPE_UINT32, OPTIONAL, None),
        ("totalJobs", 5, F.TYPE_UINT32, OPTIONAL, None),
        ("totalBlockBytes", 6, F.TYPE_UINT64, OPTIONAL, None),
    ],
    "SearchTagsResponse": [("tagNames", 1, F.TYPE_STRING, REPEATED, None)],
    "SearchTagsV2Response": [
        ("scopes", 1, F.TYPE_MESSAGE, REPEATED, ".tempopb.SearchTagsV2Scope"),
    ],
    "SearchTagsV2Scope": [
        ("name", 1, F.TYPE_STRING, OPTIONAL, None),
        ("tags", 2, F.TYPE_STRING, REPEATED, None),
    ],
    "SearchTagValuesResponse": [("tagValues", 1, F.TYPE_STRING, REPEATED, None)],
    "TagValue": [
        ("type", 1, F.TYPE_STRING, OPTIONAL, None),
        ("value", 2, F.TYPE_STRING, OPTIONAL, None),
    ],
    "SearchTagValuesV2Response": [
        ("tagValues", 1, F.TYPE_MESSAGE, REPEATED, ".tempopb.TagValue"),
    ],
}


def build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    common = descriptor_pb2.FileDescriptorProto()
    common_pb2.DESCRIPTOR.CopyToProto(common)
    pool.Add(common)
    f = descriptor_pb2.FileDescriptorProto(
        name="tempo.proto",
        package="tempopb",
        syntax="proto3",
        dependency=["opentelemetry/proto/common/v1/common.proto"],
    )
    for name, fields in MESSAGES.items():
        m = f.message_type.add(name=name)
        for field, number, ftype, label, type_name in fields:
            fd = m.field.add(name=field, number=number, type=ftype, label=label, json_name=field)
            if type_name:
                fd.type_name = type_name
        if name == "TraceSearchMetadata":
            entry = m.nested_type.add(name="ServiceStatsEntry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=OPTIONAL,
                            json_name="key")
            entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=OPTIONAL,
                            json_name="value", type_name=".tempopb.ServiceStats")
    pool.Add(f)
    return pool


def main(argv: list[str]) -> int:
    if len(argv) < 5 or len(argv) % 2 == 0:
        print(__doc__, file=sys.stderr)
        return 2
    base, tenant, pairs = argv[1], argv[2], argv[3:]
    pool = build_pool()
    failed = 0
    for name, path in zip(pairs[0::2], pairs[1::2]):
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tempopb.{name}"))
        req = urllib.request.Request(base + path, headers={"X-Scope-OrgID": tenant})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read().decode()
        try:
            msg = json_format.Parse(body, cls(), ignore_unknown_fields=False)
        except json_format.ParseError as e:
            print(f"FAIL {name} {path}: {e}\n{body[:2000]}")
            failed += 1
            continue
        if msg.ByteSize() == 0:
            print(f"FAIL {name} {path}: decoded to an empty message\n{body[:2000]}")
            failed += 1
            continue
        print(f"ok {name} {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
