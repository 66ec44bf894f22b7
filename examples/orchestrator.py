#!/usr/bin/env python3
"""An orchestrator written against the design edgeleaf follows, with nothing
edgeleaf-specific in it: find agents by capability, call the least busy one on its
endpoint, and send a workload to a location.

    python3 examples/orchestrator.py --url nats://127.0.0.1:4222 \
        --capability reverse --location plant-3 'hello'

Prints one JSON object: the cards found, which agent was called and its reply, and
the workload's result. Needs nats-py (pip install nats-py).
"""
import argparse
import asyncio
import json
import uuid

import nats
from nats.errors import TimeoutError as NatsTimeout


async def discover(nc, capability, wait=1.0):
    """Scatter-gather: every node with an agent that has `capability` answers
    with a JSON array of its cards; nodes without one stay silent."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"discovery.query.capability.{capability}", b"", reply=inbox)
    cards = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait)
            cards.extend(json.loads(msg.data))
    except NatsTimeout:
        pass
    await sub.unsubscribe()
    return cards


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--capability", required=True)
    parser.add_argument("--location", required=True)
    parser.add_argument("payload")
    args = parser.parse_args()

    nc = await nats.connect(args.url)
    cards = await discover(nc, args.capability)
    healthy = [c for c in cards if c["health_status"] == "healthy"]
    if not healthy:
        raise SystemExit(f"no healthy agent has capability {args.capability}")
    card = min(
        healthy,
        key=lambda c: c["load_metrics"]["in_flight"] / c["load_metrics"]["max_concurrency"],
    )

    # Call that agent directly: its card's endpoint is a plain request subject.
    reply = await nc.request(card["endpoint"], args.payload.encode(), timeout=5)

    # Send a workload to a location: one node there runs it on an agent with the
    # capability and publishes the result on results.<task_id>.
    task_id = uuid.uuid4().hex
    results = await nc.subscribe(f"results.{task_id}")
    workload = {"task_id": task_id, "capability": args.capability, "payload": args.payload}
    await nc.publish(f"edge.{args.location}.workloads", json.dumps(workload).encode())
    result = json.loads((await results.next_msg(timeout=10)).data)
    # Any node of the location may publish on results.>: check who answered.
    print(json.dumps({
        "cards": cards,
        "called": card["id"],
        "reply": reply.data.decode(),
        "result": result,
    }))
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
