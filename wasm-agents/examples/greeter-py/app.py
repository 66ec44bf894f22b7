"""greeter-py: an edgeleaf agent in Python that uses the host's kv, config,
messaging and log imports.

Replies `<greeting>, <name>! (#<n>)` to a payload `<name>`, where `greeting` comes
from the deployment's config (default "hello") and `n` counts greetings across
invocations in the agent's kv store. Publishes each name on `greetings.sent` (the
deployment must allow it). A payload that is not UTF-8 fails with the agent's own
error.

Build: edgeleaf build wasm-agents/examples/greeter-py
"""

import wit_world
from wit_world.imports import config, kv, log, messaging
from wit_world.imports.types import Message
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: Message) -> bytes:
        try:
            name = msg.payload.decode("utf-8").strip() or "world"
        except UnicodeDecodeError as e:
            raise Err(f"payload is not UTF-8 (invalid byte at offset {e.start})")
        greeting = config.get("greeting") or "hello"
        # kv.get returns None for a missing key; host errors raise Err(str).
        n = int((kv.get("greeted") or b"0").decode()) + 1
        kv.set("greeted", str(n).encode())
        log.log(log.Level.INFO, f"greeting {name} (#{n}) on {msg.subject}")
        messaging.publish("greetings.sent", name.encode())
        return f"{greeting}, {name}! (#{n})".encode()
