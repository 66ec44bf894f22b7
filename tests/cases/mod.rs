mod agents;
mod config;
mod fleet;
mod heartbeat;
mod leaf;
mod outbox;
mod shipping;
mod up;
