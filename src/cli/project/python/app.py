"""{{name}}: an edgeleaf agent in Python, a component of the world edgeleaf:agent.

The node calls `handle` once per message on one of its triggers (and on
`edgeleaf.inv.<node>.{{name}}`), each time in a fresh instance. What it returns is
the reply (sent back when the sender waits for one, and recorded as the result);
raising `Err("why")` reports a failure of the agent's own.
"""

import wit_world
from wit_world.imports import log
from wit_world.imports.types import Message
from componentize_py_types import Err  # noqa: F401  (raise Err("why") to fail)


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: Message) -> bytes:
        log.log(log.Level.INFO, f"{{name}} got {len(msg.payload)} bytes on {msg.subject}")
        return msg.payload
