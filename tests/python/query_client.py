"""A client of triage's query API that is not triage's own: Python grpcio.

It has no generated code for triage.v1. It discovers the API through server
reflection (grpcio-reflection's descriptor database over the v1alpha
reflection service), builds message classes from the discovered descriptors
with protobuf's descriptor pool and message factory, and calls the methods
by name. Driven by tests/it/query_api.rs, which checks what it prints.

Protocol with the test (one JSON object per line on stdout):
  1. {"step": "ready", ...}  after the unary calls, once the watch stream is
     open (its response headers arrived) and the replayed events were read.
     The test then records one more incident event.
  2. {"step": "done", ...}   with the live event, and the first event of a
     second watch resumed after the last replayed seq.
Anything unexpected raises, which exits non-zero with a traceback.
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "triage.v1.TriageQuery"
HEALTH = "grpc.health.v1.Health"
TIMEOUT = 10.0


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call, reflection included."""

    def __init__(self, token):
        self.header = ("authorization", "Bearer " + token)

    def _details(self, details):
        metadata = list(details.metadata or []) + [self.header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class Api:
    """Method callers and message classes, all from reflection."""

    def __init__(self, channel):
        self.channel = channel
        self.database = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)

    def services(self):
        return sorted(self.database.get_services())

    def message(self, name):
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(name))

    def method(self, service, name, channel=None):
        descriptor = self.pool.FindServiceByName(service).FindMethodByName(name)
        request = self.message(descriptor.input_type.full_name)
        response = self.message(descriptor.output_type.full_name)
        path = "/{}/{}".format(service, name)
        channel = channel or self.channel
        if descriptor.server_streaming:
            call = channel.unary_stream(path, request.SerializeToString, response.FromString)
        else:
            call = channel.unary_unary(path, request.SerializeToString, response.FromString)
        return request, call


def expect_error(code, call, request):
    try:
        call(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        if error.code() != code:
            raise AssertionError("expected {}, got {}: {}".format(code, error.code(), error.details()))
        return error.details()
    raise AssertionError("expected {}, the call succeeded".format(code))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True, help="host:port of the query API")
    parser.add_argument("--token", required=True)
    parser.add_argument("--service", required=True, help="a service to read statistics of")
    parser.add_argument("--after-seq", type=int, required=True)
    parser.add_argument("--expect-replay", type=int, required=True)
    args = parser.parse_args()

    plain = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(plain).result(timeout=TIMEOUT)
    channel = grpc.intercept_channel(plain, BearerToken(args.token))
    api = Api(channel)

    services = api.services()
    for wanted in (SERVICE, HEALTH):
        if wanted not in services:
            raise AssertionError("reflection does not list {}: {}".format(wanted, services))

    # Health is open: checked on the channel without the token.
    check_request, check = api.method(HEALTH, "Check", channel=plain)
    health = {}
    for name in ("", SERVICE):
        status = check(check_request(service=name), timeout=TIMEOUT).status
        health[name or "(server)"] = api.pool.FindEnumTypeByName(
            "grpc.health.v1.HealthCheckResponse.ServingStatus").values_by_number[status].name

    list_request, list_services = api.method(SERVICE, "ListServices")
    unauthenticated = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        api.method(SERVICE, "ListServices", channel=plain)[1],
        list_request(),
    )
    names = [service.name for service in list_services(list_request(), timeout=TIMEOUT).services]

    stats_request, get_stats = api.method(SERVICE, "GetServiceStats")
    stats = get_stats(stats_request(service=args.service), timeout=TIMEOUT)

    topology_request, get_topology = api.method(SERVICE, "GetTopology")
    topology = get_topology(topology_request(), timeout=TIMEOUT)

    incidents_request, list_incidents = api.method(SERVICE, "ListIncidents")
    incidents = list_incidents(incidents_request(page_size=100), timeout=TIMEOUT).incidents
    incident_request, get_incident = api.method(SERVICE, "GetIncident")
    first = get_incident(incident_request(id=incidents[0].id), timeout=TIMEOUT) if incidents else None

    change_request, record_change = api.method(SERVICE, "RecordChange")
    bad_kind = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, record_change,
        change_request(service=args.service, kind="rollout"),
    )
    change = record_change(
        change_request(service=args.service, kind="deploy", version="v9", description="from python"),
        timeout=TIMEOUT,
    ).change

    watch_request, watch = api.method(SERVICE, "WatchIncidents")
    stream = watch(watch_request(after_seq=args.after_seq), timeout=30.0)
    # The server answers with headers once the watch is subscribed, so an
    # event recorded after this point cannot be missed.
    stream.initial_metadata()
    replayed = [next(stream).seq for _ in range(args.expect_replay)]

    print(json.dumps({
        "step": "ready",
        "reflected_services": services,
        "health": health,
        "unauthenticated": unauthenticated,
        "services": names,
        "stats": {
            "service": stats.service,
            "requests": stats.total.requests,
            "errors": stats.total.errors,
            "operations": {op.operation: op.stats.requests for op in stats.operations},
            "edges": {edge.callee: edge.stats.requests for edge in stats.edges},
        },
        "edges": ["{} -> {}".format(edge.caller, edge.callee) for edge in topology.edges],
        "incidents": [incident.id for incident in incidents],
        "first_incident_events": [event.seq for event in first.events] if first else [],
        "bad_kind": bad_kind,
        "change": {"id": change.id, "kind": change.kind, "source": change.source},
        "replayed": replayed,
    }), flush=True)

    live = next(stream)
    stream.cancel()

    # Resuming after the last replayed event gives exactly the live one.
    resumed_stream = watch(watch_request(after_seq=replayed[-1] if replayed else args.after_seq),
                           timeout=TIMEOUT)
    resumed = next(resumed_stream)
    resumed_stream.cancel()

    print(json.dumps({
        "step": "done",
        "live": {"seq": live.seq, "id": live.incident.id,
                 "kind": api.pool.FindEnumTypeByName(
                     "triage.v1.EventKind").values_by_number[live.kind].name},
        "resumed_first": resumed.seq,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
