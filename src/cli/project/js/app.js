// {{name}}: an edgeleaf agent in JavaScript, a component of the world edgeleaf:agent.
//
// The node calls `handle` once per message on one of its triggers (and on
// `edgeleaf.inv.<node>.{{name}}`), each time in a fresh instance. What it returns
// (a Uint8Array) is the reply, sent back when the sender waits for one and recorded
// as the result; throwing a string reports a failure of the agent's own.
import { log } from 'edgeleaf:agent/log@0.1.0';

export function handle(msg) {
  log('info', `{{name}} got ${msg.payload.length} bytes on ${msg.subject}`);
  return msg.payload;
}
