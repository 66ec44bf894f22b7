// greeter-js: an edgeleaf agent in JavaScript that uses the host's kv, config,
// messaging and log imports.
//
// Replies `<greeting>, <name>! (#<n>)` to a payload `<name>`, where `greeting` comes
// from the deployment's config (default "hello") and `n` counts greetings across
// invocations in the agent's kv store. Publishes each name on `greetings.sent` (the
// deployment must allow it). A payload that is not UTF-8 fails with the agent's own
// error.
//
// Build: edgeleaf build wasm-agents/examples/greeter-js
import * as config from 'edgeleaf:agent/config@0.1.0';
import * as kv from 'edgeleaf:agent/kv@0.1.0';
import { log } from 'edgeleaf:agent/log@0.1.0';
import { publish } from 'edgeleaf:agent/messaging@0.1.0';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encode = (text) => new TextEncoder().encode(text);

export function handle(msg) {
  let name;
  try {
    name = utf8.decode(msg.payload).trim() || 'world';
  } catch {
    // A thrown string is the `err` of handle's result: the agent's own failure.
    throw 'payload is not UTF-8';
  }
  const greeting = config.get('greeting') ?? 'hello';
  // kv.get returns undefined for a missing key; host errors are thrown.
  const stored = kv.get('greeted');
  const n = (stored ? Number(utf8.decode(stored)) : 0) + 1;
  kv.set('greeted', encode(String(n)));
  log('info', `greeting ${name} (#${n}) on ${msg.subject}`);
  publish('greetings.sent', encode(name));
  return encode(`${greeting}, ${name}! (#${n})`);
}
