//! Integration tests: real nats-server processes (a hub and a leaf on free loopback
//! ports), the real `edgeleaf` binary, real sled directories in temp dirs.

mod cases;
mod harness;
